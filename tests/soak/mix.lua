-- wrk script for the soak: 90% quick requests over several routes, 5% errors (500 from the
-- echo), 5% slow (50 ms). DELAY_MS (env) paces each connection to the target rate.
local paths = {}
for i = 1, 90 do paths[#paths + 1] = "/api/orders/" .. (i % 7) end
for i = 1, 5 do paths[#paths + 1] = "/api/orders/9?status=500" end
for i = 1, 5 do paths[#paths + 1] = "/reports/daily?delay_ms=50" end
local n = 0
local pause = tonumber(os.getenv("DELAY_MS") or "0")

request = function()
  n = n + 1
  return wrk.format("GET", paths[(n % #paths) + 1])
end

delay = function()
  return pause
end
