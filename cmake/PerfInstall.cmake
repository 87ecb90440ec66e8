# Install rules: placeholder replaced by the packaging work (header, CMake package, pkg-config).
if(SKBUILD)
  install(TARGETS perforated LIBRARY DESTINATION perforated)
else()
  include(GNUInstallDirs)
  install(TARGETS perforated LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(FILES libperf/include/perforated.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
endif()
