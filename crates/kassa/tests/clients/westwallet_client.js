// Drives the official WestWallet JavaScript client (npm `westwallet-api`, with axios)
// for Kassa's tests. Usage: node westwallet_client.js BASE_URL OPS_JSON, where
// OPS_JSON is a list of [api_key, secret, method, arg, ...]. Prints one JSON line: for
// each call {"ok": data} or {"exception": "ClassName", "status": httpStatusIfAny}.
const westwallet = require('westwallet-api');

async function main() {
  const [baseUrl, opsJson] = process.argv.slice(2);
  const results = [];
  for (const [apiKey, secret, method, ...args] of JSON.parse(opsJson)) {
    const client = new westwallet.WestWalletAPI(apiKey, secret, baseUrl);
    try {
      results.push({ ok: await client[method](...args) });
    } catch (e) {
      results.push({ exception: e.constructor.name, status: e.response ? e.response.status : null });
    }
  }
  console.log(JSON.stringify({ results }));
}

main().catch((e) => { console.error(e); process.exit(1); });
