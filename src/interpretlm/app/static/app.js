/* interpretlm app: builds the run form from /api/methods, runs jobs, follows their progress
   (server-sent events) and shows results drawn by the server with the shared renderers
   (interpretlm.viz.render). Text from the user or the model is only ever set with
   textContent; the only HTML inserted is what the server's renderers produced (escaped there). */
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var METHODS = {}, current = null;

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in (attrs || {})) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  async function api(path, opts) {
    var r = await fetch(path, opts);
    var body = await r.json().catch(function () { return {}; });
    if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
    return body;
  }
  function status(text, isError) {
    var s = $("job-status");
    s.textContent = text;
    s.className = isError ? "error" : "il-muted";
  }

  // ---------------------------------------------------------------- the form
  function optionField(name, s) {
    var wrap = el("label");
    var types = [].concat(s.type || (s.anyOf ? s.anyOf.map(function (x) { return x.type; }) : []));
    var simple = types.filter(function (t) { return t !== "null"; });
    var input;
    if (simple.length === 1 && simple[0] === "boolean") {
      input = el("input", {type: "checkbox"});
      input.checked = !!s["default"];
      wrap.appendChild(input);
      wrap.appendChild(document.createTextNode(" " + name));
    } else {
      wrap.appendChild(document.createTextNode(name + " "));
      var kind = simple.length === 1 && (simple[0] === "integer" || simple[0] === "number") ? "number" : "text";
      input = el("input", {type: kind});
      if (kind === "number") input.setAttribute("step", simple[0] === "integer" ? "1" : "any");
      var d = s["default"];
      input.placeholder = d === undefined ? "required" : (typeof d === "string" ? d : JSON.stringify(d));
      wrap.appendChild(input);
    }
    input.dataset.option = name;
    input.dataset.kind = simple.length === 1 ? simple[0] : "json";
    wrap.appendChild(el("span", {"class": "opt-note"}, " [" + (s["x-annotation"] || "any") + "]"));
    return wrap;
  }
  function showMethod() {
    var m = METHODS[$("method").value];
    if (!m) return;
    $("method-summary").textContent = m.verb + " · takes " + m.takes + " · " + m.summary +
      (m.check ? " · check: " + m.check.name + (m.check.higher_is_better ? " ≥ " : " ≤ ") + m.check.threshold : "");
    document.querySelectorAll("#inputs [data-takes]").forEach(function (d) {
      d.hidden = d.dataset.takes.split(" ").indexOf(m.takes) < 0;
    });
    $("prompt-hint").textContent = m.takes === "dataset" ? "(one a line)" :
      m.takes === "unit" ? "(a unit: COMPONENT INDEX, e.g. blocks.12.mlp.neurons 417)" : "";
    $("target-box").hidden = m.target === "none";
    var kind = $("target-kind");
    if (m.target === "none") kind.value = "";
    else if (m.target === "required" && !kind.value) kind.value = "NextToken";
    showTarget();
    var box = $("options");
    box.textContent = "";
    var props = m.options.properties;
    for (var name in props) box.appendChild(optionField(name, props[name]));
    if (!Object.keys(props).length) box.appendChild(el("p", {"class": "il-muted"}, "no options"));
  }
  function showTarget() {
    var k = $("target-kind").value;
    document.querySelectorAll("#target-box [data-kind]").forEach(function (d) { d.hidden = d.dataset.kind !== k; });
  }
  function collect() {
    var m = METHODS[$("method").value];
    var body = {method: m.name, model: $("model").value, options: {}};
    var prompt = $("prompt").value;
    var lines = prompt.split("\n").filter(function (l) { return l.trim(); });
    if (m.takes === "prompt" || m.takes === "item") body.prompt = $("many").checked ? lines : prompt;
    if (m.takes === "dataset") body.prompts = lines;
    if (m.takes === "unit") body.unit = lines.length ? lines[0] : "";
    if (m.takes === "pairs") {
      if ($("dataset").value) { body.dataset = $("dataset").value; body.n = +$("n").value; }
      else { body.clean = $("clean").value; body.corrupted = $("corrupted").value; }
    }
    if (m.takes === "task") { body.task = $("task").value; body.n = +$("n").value; }
    if (m.takes === "result") body.result = $("result-input").value;
    var k = $("target-kind").value;
    if (k && m.target !== "none") {
      var t = {kind: k};
      if (k === "NextToken") t.token = $("t-token").value;
      if (k === "Contrast") { t.a = $("t-a").value; t.b = $("t-b").value; }
      if (k === "Continuation") t.text = $("t-text").value;
      if (k === "Label") { t.label = $("t-label").value; t.verbalizers = JSON.parse($("t-verbalizers").value); }
      body.target = t;
    }
    document.querySelectorAll("#options [data-option]").forEach(function (input) {
      var name = input.dataset.option, kind = input.dataset.kind;
      var def = m.options.properties[name]["default"];
      if (kind === "boolean") { if (input.checked !== !!def) body.options[name] = input.checked; return; }
      if (input.value === "") return;
      var v = input.value;
      if (kind === "integer") v = parseInt(v, 10);
      else if (kind === "number") v = parseFloat(v);
      else if (kind !== "string") {
        try { v = JSON.parse(v); } catch (e) { throw new Error("option " + name + ": give a JSON value (" + e.message + ")"); }
      }
      body.options[name] = v;
    });
    return body;
  }

  // ---------------------------------------------------------------- jobs
  async function run(ev) {
    ev.preventDefault();
    var body;
    try { body = collect(); } catch (e) { status(e.message, true); return; }
    var pane = $("pane-pick").value;
    status("submitting…");
    try {
      var job = await api("/api/jobs", {method: "POST", headers: {"content-type": "application/json"},
                                        body: JSON.stringify(body)});
    } catch (e) { status("refused: " + e.message, true); return; }
    current = job.id;
    $("cancel").disabled = false;
    $("run").disabled = true;
    $("progress").removeAttribute("value");
    status("queued");
    follow(job.id, pane, body.method, Array.isArray(body.prompt) ? body.prompt.length : 0);
  }
  function onJob(j, pane, method, count) {
    // the bar follows the loop over the prompts of a list (the registry names it after the method;
    // count: the prompts sent) when there is one, else the loop that reported last
    var p = $("progress"), loop = null;
    j.loops.forEach(function (l) { if (l[0] === method && l[2] === count) loop = l; });
    if (!loop && j.total > 0) loop = [j.desc, j.done, j.total];
    if (loop) { p.max = loop[2]; p.value = loop[1]; } else if (j.state === "running") p.removeAttribute("value");
    var loops = j.loops.map(function (l) { return l[0] + " " + l[1] + "/" + l[2]; });
    status(j.state + (loops.length ? " · " + loops.join(" · ") : "") + (j.error ? " · " + j.error : ""),
           j.state === "error");
    if (j.state === "done" || j.state === "error" || j.state === "cancelled") {
      $("cancel").disabled = true; $("run").disabled = false;
      p.max = 1; p.value = j.state === "done" ? 1 : 0;
      if (j.state === "done") {
        status("done in " + (j.compute_s || 0).toFixed(2) + " s · " + j.results[0] +
               (j.results.length > 1 ? " and " + (j.results.length - 1) + " more (one per prompt)" : ""));
        open(j.results[0], pane);
        refreshSaved();
      }
      return true;
    }
    return false;
  }
  async function follow(id, pane, method, count) {
    // the job's server-sent events, read with fetch: the server ends the stream at the job's
    // last state, so nothing is aborted or reconnected (an EventSource reconnects forever)
    var r = await fetch("/api/jobs/" + encodeURIComponent(id) + "/events");
    if (!r.ok) { status("progress stream refused: HTTP " + r.status, true); $("run").disabled = false; return; }
    var reader = r.body.getReader(), dec = new TextDecoder(), buf = "", finished = false;
    while (true) {
      var chunk = await reader.read();
      if (chunk.done) break;
      buf += dec.decode(chunk.value, {stream: true});
      var at;
      while ((at = buf.indexOf("\n\n")) >= 0) {
        var msg = buf.slice(0, at);
        buf = buf.slice(at + 2);
        var data = msg.split("\n").filter(function (l) { return l.indexOf("data: ") === 0; })
          .map(function (l) { return l.slice(6); }).join("\n");
        if (data) finished = onJob(JSON.parse(data), pane, method, count) || finished;
      }
    }
    if (!finished) {
      // a stream cut by the network: the job's own state says whether it ended
      try { finished = onJob(await api("/api/jobs/" + encodeURIComponent(id)), pane, method, count); } catch (e) {}
      if (!finished) { status("the progress stream ended early; see the saved results", true); $("run").disabled = false; }
    }
  }
  async function cancel() {
    if (!current) return;
    try { await api("/api/jobs/" + encodeURIComponent(current) + "/cancel", {method: "POST"}); }
    catch (e) { status(e.message, true); }
  }

  // ---------------------------------------------------------------- views
  async function open(name, pane) {
    var t = performance.now();
    var v;
    try { v = await api("/api/results/" + encodeURIComponent(name)); }
    catch (e) { status("cannot open " + name + ": " + e.message, true); return; }
    show(v, pane || "a");
    var box = $("pane-" + (pane || "a"));
    void box.offsetHeight;  // layout done: the view is on screen at the next frame
    box.dataset.renderMs = (performance.now() - t).toFixed(1);
  }
  function show(v, pane) {
    var box = $("pane-" + pane);
    if (pane === "b") { box.hidden = false; $("views").classList.add("compare"); }
    box.textContent = "";
    box.dataset.result = v.name;
    var head = el("div", {"class": "pane-head"});
    head.appendChild(el("h2", {}, v.title));
    var acts = el("span");
    acts.appendChild(link("download", v.name, "download"));
    acts.appendChild(document.createTextNode(" · "));
    acts.appendChild(link("report", v.name, "HTML report"));
    if (pane === "b") {
      var close = el("button", {type: "button", "class": "plain"}, "close");
      close.addEventListener("click", function () { box.hidden = true; $("views").classList.remove("compare"); });
      acts.appendChild(document.createTextNode(" "));
      acts.appendChild(close);
    }
    head.appendChild(acts);
    box.appendChild(head);
    box.appendChild(el("p", {"class": "il-muted"}, v.summary));
    box.appendChild(fragment(v.subject_html, "subject"));
    v.figures.forEach(function (f) {
      var s = fragment(f.html, "figure");
      s.dataset.figure = f.name;
      s.dataset.kind = f.kind;
      box.appendChild(s);
    });
    box.appendChild(fragment(v.diagnostics_html, "diagnostics"));
    if (window.interpretlmAttention) window.interpretlmAttention.mountAll();
  }
  function fragment(html, cls) {
    // HTML drawn by the server's renderers (every string escaped there); their inline scripts do
    // not run here (the page's policy forbids inline script): attention views are mounted by the
    // same attention.js, loaded from /static/viz.
    var s = el("section", {"class": cls});
    s.innerHTML = html;
    return s;
  }
  function link(what, name, text) {
    var a = el("a", {href: "/api/results/" + encodeURIComponent(name) + "/" + what}, text);
    a.setAttribute("download", "");
    return a;
  }
  async function refreshSaved() {
    var data;
    try { data = await api("/api/results"); } catch (e) { status(e.message, true); return; }
    var ul = $("saved"), sel = $("result-input");
    ul.textContent = ""; sel.textContent = "";
    data.results.forEach(function (r) {
      var li = el("li");
      li.dataset.name = r.name;
      li.appendChild(el("span", {"class": "what"}, r.method + " · " + r.kind + " · " + r.model + (r.inputs ? " · " + r.inputs : "")));
      var acts = el("span", {"class": "acts"});
      ["a", "b"].forEach(function (p) {
        var b = el("button", {type: "button", "class": "plain", "data-open": p}, p === "a" ? "open" : "open right");
        b.addEventListener("click", function () { open(r.name, p); });
        acts.appendChild(b);
      });
      acts.appendChild(link("download", r.name, "download"));
      li.appendChild(acts);
      ul.appendChild(li);
      sel.appendChild(el("option", {value: r.name}, r.method + " · " + r.name));
    });
  }
  function pickFile() {
    var f = $("prompt-file").files[0];
    if (!f) return;
    f.text().then(function (text) {
      var pick = $("prompt-pick");
      pick.textContent = "";
      text.split("\n").filter(function (l) { return l.trim(); }).slice(0, 1000).forEach(function (l) {
        pick.appendChild(el("option", {value: l}, l.length > 80 ? l.slice(0, 79) + "…" : l));
      });
      pick.hidden = false;
      if (pick.options.length) $("prompt").value = pick.options[0].value;
    });
  }

  async function init() {
    var data = await api("/api/methods"), models = await api("/api/models");
    var byVerb = {};
    data.methods.forEach(function (m) { METHODS[m.name] = m; (byVerb[m.verb] = byVerb[m.verb] || []).push(m); });
    var sel = $("method");
    Object.keys(byVerb).forEach(function (verb) {
      var g = el("optgroup", {label: verb});
      byVerb[verb].forEach(function (m) { g.appendChild(el("option", {value: m.name}, m.name)); });
      sel.appendChild(g);
    });
    models.models.forEach(function (m) { $("model").appendChild(el("option", {value: m.name}, m.name)); });
    $("model").value = models["default"];
    sel.value = METHODS.saliency ? "saliency" : data.methods[0].name;
    sel.addEventListener("change", showMethod);
    $("target-kind").addEventListener("change", showTarget);
    $("run-form").addEventListener("submit", run);
    $("cancel").addEventListener("click", cancel);
    $("refresh").addEventListener("click", refreshSaved);
    $("prompt-file").addEventListener("change", pickFile);
    $("prompt-pick").addEventListener("change", function () { $("prompt").value = $("prompt-pick").value; });
    showMethod();
    await refreshSaved();
    $("status-line").textContent = data.methods.length + " methods · models: " + models.models.map(function (m) { return m.name; }).join(", ");
    // milliseconds from the start of navigation until the form works (the latency benchmark reads it)
    document.body.dataset.ready = String(Math.round(performance.now()));
  }
  document.addEventListener("DOMContentLoaded", function () {
    init().catch(function (e) { $("status-line").textContent = "failed to start: " + e.message; });
  });
  window.interpretlmApp = {open: open};
})();
