# Packaging: the generated version header, namespaced targets
# (dualpipe::schedule, ...), and `cmake --install` of headers, libraries,
# programs and a dualpipeConfig.cmake. Included at the end of the top-level
# CMakeLists.txt, after every library target exists.
#
# Public headers live in include/dualpipe/<layer>/ and install as they are
# to <prefix>/include/dualpipe/<layer>/; the exported targets put
# <prefix>/include on the include path (<dualpipe/schedule/x.h>). Internal
# headers (src/<layer>/) are not installed.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# Core layers need no LibTorch; the torch layers are built only with it.
set(DUALPIPE_CORE_LAYERS schedule sim plan cluster)
set(DUALPIPE_TORCH_LAYERS runtime train)
# Header folders of each library (pictures is part of the sim library).
set(DUALPIPE_HEADERS_schedule schedule)
set(DUALPIPE_HEADERS_sim sim pictures)
set(DUALPIPE_HEADERS_plan plan)
set(DUALPIPE_HEADERS_cluster cluster)
set(DUALPIPE_HEADERS_runtime runtime)
set(DUALPIPE_HEADERS_train train)

foreach(layer IN LISTS DUALPIPE_CORE_LAYERS DUALPIPE_TORCH_LAYERS)
  if(NOT TARGET dualpipe_${layer})
    continue()
  endif()
  # dualpipe::<layer> in a super-project (add_subdirectory) as in an installed package.
  add_library(dualpipe::${layer} ALIAS dualpipe_${layer})
  set_target_properties(dualpipe_${layer} PROPERTIES EXPORT_NAME ${layer})
  foreach(dir IN LISTS DUALPIPE_HEADERS_${layer})
    install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/dualpipe/${dir} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/dualpipe
            COMPONENT dualpipe_dev FILES_MATCHING PATTERN "*.h")
  endforeach()
endforeach()
install(FILES ${DUALPIPE_INCLUDE_BUILD_DIR}/dualpipe/version.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/dualpipe
        COMPONENT dualpipe_dev)

set(DUALPIPE_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/dualpipe)
install(TARGETS dualpipe_schedule dualpipe_sim dualpipe_plan dualpipe_cluster EXPORT dualpipeTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dualpipe_dev
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dualpipe_dev)
install(EXPORT dualpipeTargets NAMESPACE dualpipe:: DESTINATION ${DUALPIPE_CMAKE_DIR} COMPONENT dualpipe_dev)
if(DUALPIPE_TORCH)
  # A second export file, so that the Config reads it (and looks for Torch)
  # only when the torch libraries are wanted.
  install(TARGETS dualpipe_runtime dualpipe_train EXPORT dualpipeTorchTargets
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dualpipe_dev
          LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dualpipe_dev)
  install(EXPORT dualpipeTorchTargets NAMESPACE dualpipe:: DESTINATION ${DUALPIPE_CMAKE_DIR} COMPONENT dualpipe_dev)
endif()

configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/dualpipeConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/dualpipeConfig.cmake INSTALL_DESTINATION ${DUALPIPE_CMAKE_DIR})
# 0.x: a minor version may break the API, so only the same minor matches.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/dualpipeConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/dualpipeConfig.cmake ${PROJECT_BINARY_DIR}/dualpipeConfigVersion.cmake
        DESTINATION ${DUALPIPE_CMAKE_DIR} COMPONENT dualpipe_dev)

# The programs: dualpipe and dualpipe_emulate (torchrun for emulated hosts)
# in bin/; the LibTorch commands' program where dualpipe looks for it
# (DUALPIPE_TORCH_PROGRAM_RELPATH in CMakeLists.txt).
install(TARGETS dualpipe dualpipe_emulate RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT dualpipe_programs)
if(TARGET dualpipe_torch)
  install(TARGETS dualpipe_torch RUNTIME DESTINATION ${DUALPIPE_LIBEXEC_DIR} COMPONENT dualpipe_programs)
endif()
