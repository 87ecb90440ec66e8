# Install rules for libperforated. Two layouts:
#
# - From pip (scikit-build-core sets SKBUILD): the library and its header go into the Python package
#   directory (site-packages/perforated/libperforated.so, .../perforated/include/perforated.h), where
#   perforated._c.lib finds them. The library gets an $ORIGIN-relative RUNPATH to the BLAS wheel
#   installed beside it (site-packages/scipy_openblas32/lib), never a path inside pip's temporary
#   build environment. The file is installed once, without versioned symlinks (wheels hold no links).
#
# - Standalone (cmake --install build --prefix PREFIX): lib/libperforated.so.<version> with its
#   symlinks, include/perforated.h, a CMake package (find_package(perforated) -> perforated::perforated,
#   with a version file) under lib/cmake/perforated, and lib/pkgconfig/perforated.pc. The pkg-config
#   and CMake files are relocatable (they locate the prefix from their own position), so the prefix may
#   be chosen at install time. The installed library carries a RUNPATH to the directory of its BLAS
#   when that is not a system directory (the scipy-openblas32 wheel of the configuring Python, or
#   MKL), so consumers link with -lperforated alone and run without LD_LIBRARY_PATH.

if(SKBUILD)
  if(PERF_BLAS STREQUAL "scipy-openblas")
    # site-packages/perforated/ -> site-packages/scipy_openblas32/lib
    set(_perf_rpath "$ORIGIN/../scipy_openblas32/lib")
  elseif(PERF_BLAS STREQUAL "MKL")
    # mkl / mkl-devel wheels put libmkl_*.so into <prefix>/lib; from
    # <prefix>/lib/pythonX.Y/site-packages/perforated/ that is three levels up.
    set(_perf_rpath "$ORIGIN/../../..")
  else()
    set(_perf_rpath "") # a system BLAS is found by the dynamic loader's default search
  endif()
  set_target_properties(perforated PROPERTIES INSTALL_RPATH "${_perf_rpath}"
                                              INSTALL_RPATH_USE_LINK_PATH FALSE)
  set_property(TARGET perforated PROPERTY VERSION)   # unset: one plain libperforated.so
  set_property(TARGET perforated PROPERTY SOVERSION)
  install(TARGETS perforated LIBRARY DESTINATION perforated RUNTIME DESTINATION perforated)
  install(FILES ${CMAKE_CURRENT_SOURCE_DIR}/libperf/include/perforated.h
          DESTINATION perforated/include)
  return()
endif()

include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# RUNPATH of the installed library: its BLAS directory (absolute) when outside the system paths.
set_target_properties(perforated PROPERTIES INSTALL_RPATH_USE_LINK_PATH TRUE)
if(PERF_BLAS_RPATH_DIR)
  set_property(TARGET perforated APPEND PROPERTY INSTALL_RPATH "${PERF_BLAS_RPATH_DIR}")
endif()

set(PERF_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/perforated)

install(TARGETS perforated EXPORT perforatedTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${CMAKE_CURRENT_SOURCE_DIR}/libperf/include/perforated.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

# CMake package: perforatedTargets.cmake (the imported target), perforatedConfig.cmake, version file.
install(EXPORT perforatedTargets NAMESPACE perforated:: DESTINATION ${PERF_CMAKE_DIR})
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/perforatedConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/perforatedConfig.cmake INSTALL_DESTINATION ${PERF_CMAKE_DIR})
# 0.x: only the same minor version is compatible (the API may still change between minors).
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/perforatedConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/perforatedConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/perforatedConfigVersion.cmake
        DESTINATION ${PERF_CMAKE_DIR})

# pkg-config: prefix relative to the .pc file, so `--prefix` at install time is honoured.
set(PERF_PC_DIR ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
if(IS_ABSOLUTE "${PERF_PC_DIR}")
  set(PERF_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH _perf_up "/perf_prefix/${PERF_PC_DIR}" "/perf_prefix")
  string(REGEX REPLACE "/$" "" _perf_up "${_perf_up}")
  set(PERF_PC_PREFIX "\${pcfiledir}/${_perf_up}")
endif()
foreach(_perf_dir LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${_perf_dir}}")
    set(PERF_PC_${_perf_dir} "${CMAKE_INSTALL_${_perf_dir}}")
  else()
    set(PERF_PC_${_perf_dir} "\${prefix}/${CMAKE_INSTALL_${_perf_dir}}")
  endif()
endforeach()
if(PERF_BLAS_RPATH_DIR)
  set(PERF_PC_BLAS_NOTE "# libperforated carries a RUNPATH to its BLAS: ${PERF_BLAS_RPATH_DIR}")
else()
  set(PERF_PC_BLAS_NOTE "# BLAS: ${PERF_BLAS} (linked by libperforated itself; no flags needed here)")
endif()
configure_file(${CMAKE_CURRENT_LIST_DIR}/perforated.pc.in ${CMAKE_CURRENT_BINARY_DIR}/perforated.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/perforated.pc DESTINATION ${PERF_PC_DIR})
