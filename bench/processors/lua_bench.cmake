# lua_bench: ns per record of the lua processor, record and batch mode.
if(SPOOL_WITH_LUA)
    add_executable(lua_bench ${CMAKE_CURRENT_LIST_DIR}/lua_bench.c)
    target_link_libraries(lua_bench PRIVATE spool_core)
endif()
