# The CUDA backend (PERF_WITH_CUDA=ON): libperf/src/cuda/*.cu compiled into libperforated, linked to
# the CUDA runtime and cuBLAS, and PERF_WITH_CUDA defined for the dispatch file (device.c).
#
# Architectures: CMAKE_CUDA_ARCHITECTURES defaults to SASS for Turing, Ampere (A100, consumer),
# Ada and Hopper plus compute_90 PTX, which the driver JIT-compiles on newer GPUs (Blackwell);
# override with -DCMAKE_CUDA_ARCHITECTURES=... (e.g. "native", or "90" alone for a faster build).
# cuBLAS: the toolkit's CUDA::cublas; where a toolkit lacks it, the PyPI wheel nvidia-cublas
# (nvidia/cu13/{include,lib}, only versioned libcublas.so.13) through an imported target.
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES "75-real;80-real;86-real;89-real;90" CACHE STRING
      "CUDA architectures of the CUDA backend (Turing..Hopper SASS + compute_90 PTX)")
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)

file(GLOB PERF_CUDA_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/libperf/src/cuda/*.cu)
target_sources(perforated PRIVATE ${PERF_CUDA_SOURCES})
target_compile_definitions(perforated PRIVATE PERF_WITH_CUDA)
# The target predates enable_language(CUDA), so its CUDA_ARCHITECTURES is set here explicitly.
set_target_properties(perforated PROPERTIES CUDA_ARCHITECTURES "${CMAKE_CUDA_ARCHITECTURES}"
                      CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON
                      CUDA_VISIBILITY_PRESET hidden CUDA_RUNTIME_LIBRARY Shared)
# Optimisation from CMake's per-configuration flags (CMAKE_CUDA_FLAGS_RELEASE: -O3), as for the C code.
target_compile_options(perforated PRIVATE "$<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall>")

if(TARGET CUDA::cublas)
  set(PERF_CUBLAS CUDA::cublas)
else()
  find_package(Python3 REQUIRED COMPONENTS Interpreter)
  execute_process(
    COMMAND ${Python3_EXECUTABLE} -c "import nvidia.cu13 as m; print(list(m.__path__)[0])"
    OUTPUT_VARIABLE _perf_cu13 OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _perf_rc)
  find_file(PERF_CUBLAS_LIBRARY NAMES libcublas.so.13 PATHS ${_perf_cu13}/lib NO_DEFAULT_PATH)
  if(NOT _perf_rc EQUAL 0 OR NOT PERF_CUBLAS_LIBRARY)
    message(FATAL_ERROR "PERF_WITH_CUDA: the CUDA toolkit has no cuBLAS and the nvidia-cublas wheel was "
                        "not found (python -m pip install nvidia-cublas)")
  endif()
  add_library(perf_cublas SHARED IMPORTED)
  set_target_properties(perf_cublas PROPERTIES IMPORTED_LOCATION ${PERF_CUBLAS_LIBRARY}
                        INTERFACE_INCLUDE_DIRECTORIES ${_perf_cu13}/include)
  set(PERF_CUBLAS perf_cublas)
endif()
target_link_libraries(perforated PRIVATE CUDA::cudart ${PERF_CUBLAS})
message(STATUS "perforated: CUDA ${CUDAToolkit_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES}, "
               "cuBLAS ${PERF_CUBLAS}")
