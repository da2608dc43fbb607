/* interpretlm attention view: head view (heatmap + hoverable tokens) and model view (small multiples).
   Offline, no dependencies. Tokens are inserted with textContent only (never as HTML).
   Usage: interpretlmAttention.mount(element, payload) where payload comes from
   interpretlm.viz.attention.attention_payload (also embedded by attention_view). */
(function () {
  if (window.interpretlmAttention) return;

  function decode(b64) {
    var s = atob(b64), out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  var LUT = [];  // v in 0..255 -> white to deep blue (sqrt scale, so small weights stay visible)
  for (var v = 0; v < 256; v++) {
    var t = Math.sqrt(v / 255);
    LUT.push([Math.round(255 - 225 * t), Math.round(255 - 170 * t), Math.round(255 - 60 * t)]);
  }
  function shade(v) { return LUT[v]; }

  function mount(root, P) {
    var t0 = (window.performance || Date).now();
    var L = P.layers.length, H = P.heads.length, g = P.grid, blk = P.block, n = P.tokens.length;
    var full = P.full.map(decode), thumbs = P.thumbs.map(decode);
    var state = { li: 0, hi: 0, q: -1 };

    var controls = el("div", "il-attn-controls");
    var layerSel = el("select"), headSel = el("select");
    P.layers.forEach(function (l, i) { var o = el("option", "", "layer " + l); o.value = i; layerSel.appendChild(o); });
    P.heads.forEach(function (h, i) { var o = el("option", "", "head " + h); o.value = i; headSel.appendChild(o); });
    var lab1 = el("label", "", "Layer "), lab2 = el("label", "", "Head ");
    lab1.appendChild(layerSel); lab2.appendChild(headSel);
    var modelBox = el("input"); modelBox.type = "checkbox"; modelBox.checked = true;
    var lab3 = el("label", "", " model view"); lab3.insertBefore(modelBox, lab3.firstChild);
    controls.appendChild(lab1); controls.appendChild(lab2); controls.appendChild(lab3);
    root.appendChild(controls);
    if (blk > 1) root.appendChild(el("p", "il-attn-note",
      "Long input: each heatmap cell averages " + blk + "×" + blk + " token pairs (the page keeps its size); hover a token for its row."));

    var head = el("div", "il-attn-head");
    var wrap = el("div", "il-attn-canvas-wrap");
    var canvas = el("canvas", "il-attn-canvas");
    canvas.width = g; canvas.height = g;
    var px = Math.max(1, Math.floor(Math.min(480, Math.max(160, root.clientWidth * 0.45 || 360)) / g));
    canvas.style.width = (g * px) + "px"; canvas.style.height = (g * px) + "px";
    var tip = el("div", "il-attn-tip");
    wrap.appendChild(el("div", "il-attn-axis", "rows: query (attends from) · columns: key (attends to)"));
    wrap.appendChild(canvas); wrap.appendChild(tip);
    var text = el("div", "il-attn-text");
    var spans = P.tokens.map(function (t, i) {
      var s = el("span", P.special[i] ? "il-special" : "", t);
      s.title = "position " + i;
      s.addEventListener("mouseenter", function () { setQuery(i); });
      text.appendChild(s);
      return s;
    });
    text.addEventListener("mouseleave", function () { setQuery(-1); });
    head.appendChild(wrap); head.appendChild(text);
    root.appendChild(head);

    var ctx = canvas.getContext("2d");
    var image = ctx.createImageData(g, g);
    function current() { return full[state.li * H + state.hi]; }
    function drawHeat() {
      var d = current(), px4 = image.data;
      for (var i = 0; i < g * g; i++) {
        var c = shade(d[i]);
        px4[4 * i] = c[0]; px4[4 * i + 1] = c[1]; px4[4 * i + 2] = c[2]; px4[4 * i + 3] = 255;
      }
      ctx.putImageData(image, 0, 0);
      if (state.q >= 0) {
        ctx.strokeStyle = "#d62728"; ctx.lineWidth = 0.6;
        ctx.strokeRect(0, Math.floor(state.q / blk) + 0.3, g, 0.4);
      }
    }
    function paintText() {
      var d = current();
      for (var k = 0; k < n; k++) {
        var s = spans[k];
        if (state.q < 0) { s.style.background = ""; s.classList.remove("il-q"); continue; }
        var v = d[Math.floor(state.q / blk) * g + Math.floor(k / blk)];
        var c = shade(v);
        s.style.background = v ? "rgb(" + c.join(",") + ")" : "";
        s.classList.toggle("il-q", k === state.q);
      }
    }
    function setQuery(q) { state.q = q; drawHeat(); paintText(); }
    canvas.addEventListener("mousemove", function (ev) {
      var r = canvas.getBoundingClientRect();
      var col = Math.min(g - 1, Math.floor((ev.clientX - r.left) / r.width * g));
      var row = Math.min(g - 1, Math.floor((ev.clientY - r.top) / r.height * g));
      var q = Math.min(n - 1, row * blk), k = Math.min(n - 1, col * blk);
      var v = current()[row * g + col] / 255;
      tip.textContent = (blk > 1 ? "queries " + q + "–" + Math.min(n - 1, q + blk - 1) + " → keys " + k + "–" + Math.min(n - 1, k + blk - 1)
        : JSON.stringify(P.tokens[q]) + " → " + JSON.stringify(P.tokens[k])) + "  " + v.toFixed(3);
      tip.style.display = "block";
      tip.style.left = (ev.clientX - r.left + 12) + "px"; tip.style.top = (ev.clientY - r.top + 22) + "px";
      if (q !== state.q) setQuery(q);
    });
    canvas.addEventListener("mouseleave", function () { tip.style.display = "none"; });

    // model view: every kept layer x head as a small multiple, drawn only when scrolled into view
    var grid = el("div", "il-attn-model");
    grid.style.gridTemplateColumns = "repeat(" + H + ", max-content)";
    var cells = [];
    var t = P.thumb;
    function drawThumb(cv, idx) {
      var c2 = cv.getContext("2d"), im = c2.createImageData(t, t), d = thumbs[idx];
      for (var i = 0; i < t * t; i++) {
        var c = shade(d[i]);
        im.data[4 * i] = c[0]; im.data[4 * i + 1] = c[1]; im.data[4 * i + 2] = c[2]; im.data[4 * i + 3] = 255;
      }
      c2.putImageData(im, 0, 0);
    }
    var observer = "IntersectionObserver" in window ? new IntersectionObserver(function (entries) {
      entries.forEach(function (e) {
        if (e.isIntersecting && !e.target._drawn) { e.target._drawn = true; drawThumb(e.target, e.target._idx); }
      });
    }) : null;
    for (var li = 0; li < L; li++) for (var hi = 0; hi < H; hi++) {
      (function (li, hi) {
        var cell = el("div", "il-cell"), cv = el("canvas");
        cv.width = t; cv.height = t; cv._idx = li * H + hi;
        cell.title = "layer " + P.layers[li] + ", head " + P.heads[hi];
        cell.appendChild(cv); cell.appendChild(el("span", "il-lab", "L" + P.layers[li] + " H" + P.heads[hi]));
        cell.addEventListener("click", function () { select(li, hi); });
        grid.appendChild(cell); cells.push(cell);
        if (observer) observer.observe(cv); else drawThumb(cv, cv._idx);
      })(li, hi);
    }
    root.appendChild(grid);
    modelBox.addEventListener("change", function () { grid.style.display = modelBox.checked ? "grid" : "none"; });

    function select(li, hi) {
      state.li = li; state.hi = hi; layerSel.value = li; headSel.value = hi;
      cells.forEach(function (c, i) { c.classList.toggle("il-on", i === li * H + hi); });
      drawHeat(); paintText();
    }
    layerSel.addEventListener("change", function () { select(+layerSel.value, state.hi); });
    headSel.addEventListener("change", function () { select(state.li, +headSel.value); });
    select(0, 0);
    root.setAttribute("data-il-mount-ms", Math.round((window.performance || Date).now() - t0));
  }

  window.interpretlmAttention = {
    mount: mount,
    mountAll: function () {
      var nodes = document.querySelectorAll("div.il-attn[data-il-pending]");
      for (var i = 0; i < nodes.length; i++) {
        var node = nodes[i];
        node.removeAttribute("data-il-pending");
        var payload = JSON.parse(node.querySelector("script[type='application/json']").textContent);
        mount(node, payload);
      }
    }
  };
})();
window.interpretlmAttention.mountAll();
