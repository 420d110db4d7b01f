-- POST /jobs with a small JSON body, as shared/baselines/wrk_post.lua does, plus the bearer
-- token the web will soon require (BENCH_TOKEN; a server without authentication ignores it).
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or '{"command": "true"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_TOKEN") or "")
dofile((os.getenv("BENCH_WRK_DIR") or ".") .. "/report.lua")
