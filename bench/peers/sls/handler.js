// a → b → c over the emulator's own HTTP front door; c answers with the payload and a mark.
const base = () => `http://127.0.0.1:${process.env.BENCH_HTTP_PORT}`;

async function call(path, body) {
  const response = await fetch(base() + path, { method: "POST", body, headers: { "content-type": "application/json" } });
  return { statusCode: response.status, body: await response.text() };
}

exports.a = async (event) => call("/b", event.body);
exports.b = async (event) => call("/c", event.body);
exports.c = async (event) => {
  const order = JSON.parse(event.body || "{}");
  order.done = true;
  return { statusCode: 200, body: JSON.stringify(order) };
};
