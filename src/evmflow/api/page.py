"""The page served on GET / and GET /graphql: GraphiQL, or a plain query console offline.

GraphiQL is loaded from a public CDN. Where the browser cannot reach it (an air-gapped
server, a test machine) the page falls back, after a few seconds, to a small console of its
own: a query box, a variables box, a Run button and the answer.
"""

from __future__ import annotations

GRAPHIQL_VERSION = "3.8.3"
_CDN = "https://cdn.jsdelivr.net/npm"

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>evmflow GraphQL - __TITLE__</title>
<link rel="stylesheet" href="__CDN__/graphiql@__VERSION__/graphiql.min.css">
<style>
  html, body { height: 100%; margin: 0; font-family: system-ui, sans-serif; }
  #graphiql { height: 100vh; }
  #console { display: none; height: 100vh; box-sizing: border-box; padding: 12px;
             flex-direction: column; gap: 8px; background: #f6f7f9; }
  #console header { display: flex; align-items: baseline; gap: 12px; }
  #console h1 { font-size: 18px; margin: 0; }
  #console .note { color: #666; font-size: 13px; }
  #console .panes { display: flex; gap: 12px; flex: 1; min-height: 0; }
  #console .left { display: flex; flex-direction: column; gap: 8px; flex: 1; }
  #console textarea, #console pre { font: 13px/1.4 ui-monospace, monospace; border: 1px solid
             #ccd; border-radius: 6px; padding: 8px; background: white; margin: 0; }
  #query { flex: 3; } #variables { flex: 1; }
  #answer { flex: 1; overflow: auto; white-space: pre-wrap; }
  #run { font-size: 14px; padding: 6px 18px; border-radius: 6px; border: 0;
         background: #e10098; color: white; cursor: pointer; }
</style>
</head>
<body>
<div id="graphiql"></div>
<div id="console">
  <header><h1>evmflow GraphQL - __TITLE__</h1>
  <button id="run" title="Ctrl+Enter">Run</button>
  <span class="note">GraphiQL could not be loaded; this is evmflow's plain console.
  POST queries to <code>/graphql</code>.</span></header>
  <div class="panes">
    <div class="left">
      <textarea id="query" spellcheck="false">__QUERY__</textarea>
      <textarea id="variables" spellcheck="false" placeholder="variables (JSON)"></textarea>
    </div>
    <pre id="answer"></pre>
  </div>
</div>
<script>
const endpoint = new URL("/graphql", window.location.href).toString();
const defaultQuery = document.getElementById("query").value;
let started = false;

function runConsole() {
  if (started) return;
  started = true;
  document.getElementById("graphiql").style.display = "none";
  document.getElementById("console").style.display = "flex";
  const answer = document.getElementById("answer");
  async function run() {
    answer.textContent = "running...";
    let variables = {};
    const text = document.getElementById("variables").value.trim();
    try { if (text) variables = JSON.parse(text); }
    catch (e) { answer.textContent = "variables are not valid JSON: " + e.message; return; }
    const response = await fetch(endpoint, {
      method: "POST", headers: {"content-type": "application/json"},
      body: JSON.stringify({query: document.getElementById("query").value, variables}),
    });
    answer.textContent = JSON.stringify(await response.json(), null, 2);
    document.body.dataset.answered = "yes";
  }
  document.getElementById("run").onclick = run;
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) run();
  });
  if (new URLSearchParams(window.location.search).has("run")) run();
}

function load(src) {
  return new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = src; s.crossOrigin = "anonymous"; s.onload = resolve; s.onerror = reject;
    document.head.appendChild(s);
  });
}

const fallback = setTimeout(runConsole, 4000);
(async () => {
  try {
    await load("__CDN__/react@18.3.1/umd/react.production.min.js");
    await load("__CDN__/react-dom@18.3.1/umd/react-dom.production.min.js");
    await load("__CDN__/graphiql@__VERSION__/graphiql.min.js");
  } catch (e) { clearTimeout(fallback); runConsole(); return; }
  if (started) return;
  clearTimeout(fallback);
  const fetcher = GraphiQL.createFetcher({url: endpoint});
  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(GraphiQL, {fetcher, defaultQuery}));
})();
</script>
</body>
</html>
"""


def graphiql_page(title: str, default_query: str) -> str:
    import html

    return (
        _PAGE.replace("__CDN__", _CDN)
        .replace("__VERSION__", GRAPHIQL_VERSION)
        .replace("__TITLE__", html.escape(title))
        .replace("__QUERY__", html.escape(default_query))
    )
