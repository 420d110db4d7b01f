-- GET the URL given to wrk (path and query included) with the bearer token.
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_TOKEN") or "")
dofile((os.getenv("BENCH_WRK_DIR") or ".") .. "/report.lua")
