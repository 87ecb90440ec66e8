# Resolves PERF_BLAS into an interface target `perf_blas` and PERF_BLAS_DEFINITIONS.
# The default (scipy-openblas) falls back to the system BLAS, with a warning, in a standalone build
# whose PERF_BLAS was not given on the command line and whose Python lacks the scipy-openblas32 wheel.
add_library(perf_blas INTERFACE)
set(PERF_BLAS_DEFINITIONS "")

if(PERF_BLAS STREQUAL "scipy-openblas")
  # The wheel on PyPI: python -m pip install scipy-openblas32. Its symbols carry a scipy_ prefix.
  set(_perf_wheel_problem "")
  if(NOT PERF_SCIPY_OPENBLAS_DIR)
    find_package(Python3 COMPONENTS Interpreter)
    if(NOT Python3_Interpreter_FOUND)
      set(_perf_wheel_problem "no Python interpreter found")
    else()
      execute_process(
        COMMAND ${Python3_EXECUTABLE} -c "import scipy_openblas32 as s, os; print(os.path.dirname(s.__file__))"
        OUTPUT_VARIABLE _perf_wheel_dir OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _perf_rc
        ERROR_QUIET)
      if(_perf_rc EQUAL 0)
        set(PERF_SCIPY_OPENBLAS_DIR ${_perf_wheel_dir})
      else()
        set(_perf_wheel_problem "${Python3_EXECUTABLE} cannot import scipy_openblas32")
      endif()
    endif()
  endif()
  if(NOT _perf_wheel_problem)
    find_library(PERF_SCIPY_OPENBLAS_LIB NAMES scipy_openblas PATHS ${PERF_SCIPY_OPENBLAS_DIR}/lib
                 NO_DEFAULT_PATH)
    if(NOT PERF_SCIPY_OPENBLAS_LIB)
      unset(PERF_SCIPY_OPENBLAS_LIB CACHE) # look again at the next configure
      set(_perf_wheel_problem "no libscipy_openblas in ${PERF_SCIPY_OPENBLAS_DIR}/lib")
    endif()
  endif()
  if(_perf_wheel_problem AND PERF_BLAS_DEFAULTED AND NOT SKBUILD)
    # A plain standalone configure without the wheel: use the system BLAS rather than fail. The
    # cache records the choice (PERF_BLAS=system), so later configures keep it.
    message(WARNING "perforated: the default BLAS, the scipy-openblas32 wheel, was not found "
                    "(${_perf_wheel_problem}); falling back to the system BLAS (FindBLAS, PERF_BLAS=system). "
                    "For the default BLAS: python -m pip install scipy-openblas32, then configure a fresh "
                    "build directory (or pass -DPERF_BLAS=scipy-openblas -DPython3_EXECUTABLE=...).")
    set(PERF_BLAS "system" CACHE STRING
        "BLAS to link: scipy-openblas (the PyPI wheel, default), MKL (find_package(MKL CONFIG)), or system (FindBLAS; choose with -DBLA_VENDOR=...)"
        FORCE)
  elseif(_perf_wheel_problem)
    # Asked for explicitly (or pip's build, where the wheel is a build requirement): an error.
    message(FATAL_ERROR "PERF_BLAS=scipy-openblas needs the scipy-openblas32 wheel (${_perf_wheel_problem}): "
                        "python -m pip install scipy-openblas32 (or choose -DPERF_BLAS=system / MKL)")
  else()
    target_include_directories(perf_blas INTERFACE ${PERF_SCIPY_OPENBLAS_DIR}/include)
    target_link_libraries(perf_blas INTERFACE ${PERF_SCIPY_OPENBLAS_LIB})
    set(PERF_BLAS_DEFINITIONS PERF_BLAS_SCIPY_PREFIX PERF_BLAS_OPENBLAS)
    set(PERF_BLAS_RPATH_DIR ${PERF_SCIPY_OPENBLAS_DIR}/lib)
  endif()
endif()

if(PERF_BLAS STREQUAL "scipy-openblas")
  # the wheel, resolved above (without it, PERF_BLAS is now "system" or configuring stopped)
elseif(PERF_BLAS STREQUAL "MKL")
  # oneMKL's MKLConfig.cmake defaults to the Intel OpenMP threading layer (libiomp5), which would run
  # beside our libgomp; each of our OpenMP threads calls BLAS on its own slice, so the sequential
  # layer is the right one. LP64: 32-bit MKL_INT, matching the int sizes we pass.
  set(MKL_THREADING "sequential" CACHE STRING "oneMKL threading layer (see MKLConfig.cmake)")
  set(MKL_INTERFACE "lp64" CACHE STRING "oneMKL interface layer (lp64: 32-bit integers)")
  find_package(MKL CONFIG REQUIRED)
  target_link_libraries(perf_blas INTERFACE MKL::MKL)
  set(PERF_BLAS_DEFINITIONS PERF_BLAS_MKL)
elseif(PERF_BLAS STREQUAL "system")
  find_package(BLAS)
  if(NOT BLAS_FOUND)
    message(FATAL_ERROR "PERF_BLAS=system: FindBLAS found no BLAS (install e.g. libopenblas-dev, choose one "
                        "with -DBLA_VENDOR=..., or install the scipy-openblas32 wheel for the default BLAS)")
  endif()
  find_path(PERF_CBLAS_INCLUDE cblas.h PATH_SUFFIXES openblas blis)
  if(NOT PERF_CBLAS_INCLUDE)
    message(FATAL_ERROR "PERF_BLAS=system: cblas.h not found (install e.g. libopenblas-dev)")
  endif()
  target_include_directories(perf_blas INTERFACE ${PERF_CBLAS_INCLUDE})
  target_link_libraries(perf_blas INTERFACE ${BLAS_LIBRARIES})
  if(BLAS_LIBRARIES MATCHES "openblas")
    set(PERF_BLAS_DEFINITIONS PERF_BLAS_OPENBLAS)
  endif()
else()
  message(FATAL_ERROR "PERF_BLAS must be scipy-openblas, MKL or system, got '${PERF_BLAS}'")
endif()
message(STATUS "perforated: BLAS = ${PERF_BLAS} (${PERF_BLAS_DEFINITIONS})")
