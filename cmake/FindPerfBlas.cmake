# Resolves PERF_BLAS into an interface target `perf_blas` and PERF_BLAS_DEFINITIONS.
add_library(perf_blas INTERFACE)
set(PERF_BLAS_DEFINITIONS "")

if(PERF_BLAS STREQUAL "scipy-openblas")
  # The wheel on PyPI: python -m pip install scipy-openblas32. Its symbols carry a scipy_ prefix.
  if(NOT PERF_SCIPY_OPENBLAS_DIR)
    find_package(Python3 REQUIRED COMPONENTS Interpreter)
    execute_process(
      COMMAND ${Python3_EXECUTABLE} -c "import scipy_openblas32 as s, os; print(os.path.dirname(s.__file__))"
      OUTPUT_VARIABLE PERF_SCIPY_OPENBLAS_DIR OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _perf_rc)
    if(NOT _perf_rc EQUAL 0)
      message(FATAL_ERROR "PERF_BLAS=scipy-openblas needs the scipy-openblas32 wheel: "
                          "python -m pip install scipy-openblas32 (or choose -DPERF_BLAS=system / MKL)")
    endif()
  endif()
  find_library(PERF_SCIPY_OPENBLAS_LIB NAMES scipy_openblas PATHS ${PERF_SCIPY_OPENBLAS_DIR}/lib
               NO_DEFAULT_PATH REQUIRED)
  target_include_directories(perf_blas INTERFACE ${PERF_SCIPY_OPENBLAS_DIR}/include)
  target_link_libraries(perf_blas INTERFACE ${PERF_SCIPY_OPENBLAS_LIB})
  set(PERF_BLAS_DEFINITIONS PERF_BLAS_SCIPY_PREFIX PERF_BLAS_OPENBLAS)
  set(PERF_BLAS_RPATH_DIR ${PERF_SCIPY_OPENBLAS_DIR}/lib)
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
  find_package(BLAS REQUIRED)
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
