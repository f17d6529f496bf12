// A provider stand-in for the benchmark: answers every POST with {"code":"ok"} after DELAY_MS,
// keep-alive, and counts requests. Fast enough not to be the limit (the benchmark reports its
// CPU). Usage: node bench/mock.js PORT DELAY_MS   (prints "ready" once listening)
//   GET /count   -> number of POSTs received so far
"use strict";
const http = require("http");

const port = Number(process.argv[2]);
const delay = Number(process.argv[3] || 0);
let count = 0;

const server = http.createServer((req, res) => {
  if (req.method === "GET") {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end(String(count));
    return;
  }
  req.resume();
  req.on("end", () => {
    count += 1;
    const answer = () => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end('{"code":"ok"}');
    };
    if (delay > 0) setTimeout(answer, delay);
    else answer();
  });
});
server.keepAliveTimeout = 60_000;
server.maxHeadersCount = 100;
server.listen(port, "127.0.0.1", () => console.log("ready"));
