"""The numpy (and GPU array) API of the C library's operations: perforation masks (:mod:`.masks`),
convolution (:mod:`.conv`), interpolation (:mod:`.interp`), pooling (:mod:`.pooling`), the other layers
(:mod:`.layers`), batch normalisation (:mod:`.batchnorm`) and NCHW / channels-last conversion
(:mod:`.layout`). Each function checks its arguments and runs one C call; networks are built above, in
:mod:`perforated.graph`."""
