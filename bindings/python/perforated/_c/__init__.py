"""The boundary to libperforated: loading it through cffi (:mod:`.lib`), argument checks before any C
call (:mod:`.arrays`), the exceptions carrying its messages (:mod:`.errors`), CUDA contexts and GPU
arrays (:mod:`.device`) and the arrays a model keeps on its device (:mod:`.buffers`). Everything above
(``ops``, ``graph``, ``search``, ``train``) calls the library through these modules only."""
