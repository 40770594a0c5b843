import asyncio, httpx, sys, re, uuid
n, stream, mt = int(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3])
tag = uuid.uuid4().hex
async def main():
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=512)) as c:
        async def one(i):
            r = await c.post("http://127.0.0.1:8170/v1/completions", json={"prompt": f"Hi {i}", "max_tokens": mt, "stream": stream}, headers={"x-request-id": f"{tag}-{i}"})
            return r.status_code
        await asyncio.gather(*(one(i) for i in range(n)))
asyncio.run(main())
import time; time.sleep(1)
by = re.findall(rf"\[api-(\d)\] pyinfer\.access: .* request_id={tag}-", open("/tmp/dist.log").read())
print(n, stream, mt, by.count("0"), by.count("1"))
