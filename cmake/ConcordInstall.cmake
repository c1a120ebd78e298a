# Install rules: headers, the layer libraries and concordConfig.cmake, so an outside project can
# `find_package(concord)` and link `concord::concord`.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

get_property(_concord_libs GLOBAL PROPERTY CONCORD_LIBRARIES)
list(REMOVE_ITEM _concord_libs concord_test_support)

add_library(concord INTERFACE)
add_library(concord::concord ALIAS concord)
target_link_libraries(concord INTERFACE ${_concord_libs})

install(DIRECTORY include/concord DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES "${PROJECT_BINARY_DIR}/include/concord/core/version.h"
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/concord/core)
set(_concord_install_targets concord ${_concord_libs})
if(TARGET concord_kernels_cuda)
  list(APPEND _concord_install_targets concord_kernels_cuda)
endif()
install(TARGETS ${_concord_install_targets} EXPORT concordTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS concord_sentencepiece_shim LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
if(TARGET concord_cli)
  install(TARGETS concord_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
install(EXPORT concordTargets NAMESPACE concord:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/concord)

configure_package_config_file(cmake/concordConfig.cmake.in
  "${PROJECT_BINARY_DIR}/concordConfig.cmake"
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/concord)
write_basic_package_version_file("${PROJECT_BINARY_DIR}/concordConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion)
install(FILES "${PROJECT_BINARY_DIR}/concordConfig.cmake"
              "${PROJECT_BINARY_DIR}/concordConfigVersion.cmake"
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/concord)
