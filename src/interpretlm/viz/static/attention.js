/* interpretlm attention view: head view (heatmap with the tokens on both axes), line view
   (bertviz-style, short inputs), the hovered query's weights over the text, and the model
   view (every layer x head). Offline, no dependencies. Tokens are inserted with textContent
   only (never as HTML), each in its own bidi-isolated <bdi>, drawn with the visible escapes
   the payload's "labels" carry (a U+202E in a token shows as \u202e, never applied).
   Usage: interpretlmAttention.mount(element, payload). */
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
  function fmt(x) { return x >= 0.01 || x === 0 ? x.toFixed(3) : x.toPrecision(2); }
  var LINE_MAX = 48;  // tokens up to which the line view is drawn

  function mount(root, P) {
    var t0 = (window.performance || Date).now();
    var L = P.layers.length, H = P.heads.length, g = P.grid, blk = P.block, n = P.tokens.length;
    var labels = P.labels || P.tokens, reprs = P.reprs || P.tokens;
    // per layer, its heads' g x g images, expanded from the stored lower triangle when P.tri;
    // layer 0 is stored raw (drawn at once), the others are inflated when first shown
    var layerData = [], pending = [];
    function expand(bytes) {
      var per = P.tri ? g * (g + 1) / 2 : g * g, out = [];
      for (var h = 0; h < H; h++) {
        var src = bytes.subarray(h * per, (h + 1) * per);
        if (!P.tri) { out.push(src); continue; }
        var m = new Uint8Array(g * g), o = 0;
        for (var r = 0; r < g; r++) { m.set(src.subarray(o, o + r + 1), r * g); o += r + 1; }
        out.push(m);
      }
      return out;
    }
    function loadLayer(li) {
      if (layerData[li]) return Promise.resolve(layerData[li]);
      if (!pending[li]) {
        var bytes = decode(P.full[li]);
        var ready = (P.packed || [])[li] === "deflate"
          ? new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"))).arrayBuffer()
              .then(function (b) { return new Uint8Array(b); })
          : Promise.resolve(bytes);
        pending[li] = ready.then(function (b) { layerData[li] = expand(b); return layerData[li]; });
      }
      return pending[li];
    }
    if ((P.packed || [])[0] !== "deflate") layerData[0] = expand(decode(P.full[0]));
    var state = { li: 0, hi: 0, q: -1 };

    var controls = el("div", "il-attn-controls");
    var layerSel = el("select"), headSel = el("select");
    P.layers.forEach(function (l, i) { var o = el("option", "", "layer " + l); o.value = i; layerSel.appendChild(o); });
    P.heads.forEach(function (h, i) { var o = el("option", "", "head " + h); o.value = i; headSel.appendChild(o); });
    var lab1 = el("label", "", "Layer "), lab2 = el("label", "", "Head ");
    lab1.appendChild(layerSel); lab2.appendChild(headSel);
    var modelBox = el("input"); modelBox.type = "checkbox"; modelBox.checked = true;
    var lab3 = el("label", "", " model view (all layers × heads)"); lab3.insertBefore(modelBox, lab3.firstChild);
    controls.appendChild(lab1); controls.appendChild(lab2); controls.appendChild(lab3);
    root.appendChild(controls);

    // colour bar: the head view's scale (probabilities, drawn on a square-root scale)
    var leg = el("div", "il-legend il-attn-legend");
    leg.setAttribute("data-min", "0"); leg.setAttribute("data-max", "1");
    leg.appendChild(el("span", "il-legend-lo", "0"));
    var bar = el("span", "il-legend-bar");
    var stops = []; for (var k = 0; k <= 8; k++) { var c0 = shade(Math.round(255 * k / 8)); stops.push("rgb(" + c0.join(",") + ")"); }
    bar.style.background = "linear-gradient(to right," + stops.join(",") + ")";
    leg.appendChild(bar); leg.appendChild(el("span", "il-legend-hi", "1"));
    leg.appendChild(el("span", "il-legend-label", "attention probability (square-root colour scale; model-view thumbnails each scaled to their own maximum)"));
    root.appendChild(leg);
    if (blk > 1) root.appendChild(el("p", "il-attn-note",
      "Long input: each heatmap cell averages " + blk + "×" + blk + " token pairs (the page keeps its size); hover a cell for its tokens."));

    var views = el("div", "il-attn-views");
    root.appendChild(views);

    // ---- head view: heatmap with tokens on both axes, in a panel that scrolls when large
    var c = g <= 160 ? Math.max(11, Math.min(28, Math.floor(560 / g))) : Math.max(2, Math.floor(900 / g));
    var every = Math.max(1, Math.ceil(11 / c));  // label every k-th cell so labels never overlap
    var slot = c * every;  // pixels each label owns along its axis
    var font = Math.min(11, Math.max(7, slot - 1));
    var rowW = 130, colH = 120;
    var side = el("div");
    side.appendChild(el("p", "il-attn-axis", "rows: query (attends from) · columns: key (attends to)" +
      (every > 1 ? " · every " + every + "th token labelled" : "")));
    var panel = el("div", "il-attn-panel");
    var gridEl = el("div", "il-attn-grid");
    gridEl.style.gridTemplateColumns = rowW + "px " + (g * c) + "px";
    gridEl.style.gridTemplateRows = colH + "px " + (g * c) + "px";
    var cols = el("div", "il-attn-cols"), rows = el("div", "il-attn-rows");
    cols.style.gridColumn = "2"; cols.style.gridRow = "1"; cols.style.height = colH + "px";
    rows.style.gridColumn = "1"; rows.style.gridRow = "2"; rows.style.width = rowW + "px";
    function cellLabel(i) {  // cell i covers tokens i*blk .. i*blk+blk-1
      var a = i * blk, b = Math.min(n - 1, a + blk - 1);
      return { text: blk > 1 ? a + "–" + b + " " + labels[a] + "…" : labels[a],
               hover: blk > 1 ? "tokens " + a + "–" + b : "position " + a + ": " + reprs[a], special: P.special[a] };
    }
    var rowLabs = [], colLabs = [];
    for (var i = 0; i < g; i += every) {
      var info = cellLabel(i);
      var rl = el("bdi", "il-attn-rl" + (info.special ? " il-special" : ""), info.text);
      rl.style.top = (i * c) + "px"; rl.style.height = slot + "px"; rl.style.lineHeight = slot + "px";
      rl.style.maxWidth = (rowW - 6) + "px"; rl.style.fontSize = font + "px"; rl.title = info.hover;
      var cl = el("bdi", "il-attn-cl" + (info.special ? " il-special" : ""), info.text);
      cl.style.left = (i * c) + "px"; cl.style.width = slot + "px"; cl.style.lineHeight = slot + "px";
      cl.style.maxHeight = (colH - 6) + "px"; cl.style.fontSize = font + "px"; cl.title = info.hover;
      rows.appendChild(rl); cols.appendChild(cl); rowLabs[i] = rl; colLabs[i] = cl;
    }
    var canvas = el("canvas", "il-attn-canvas");
    canvas.width = g; canvas.height = g;
    canvas.style.width = (g * c) + "px"; canvas.style.height = (g * c) + "px";
    canvas.style.gridColumn = "2"; canvas.style.gridRow = "2";
    gridEl.appendChild(el("div")); gridEl.appendChild(cols); gridEl.appendChild(rows); gridEl.appendChild(canvas);
    panel.appendChild(gridEl); side.appendChild(panel);
    views.appendChild(side);
    var tip = el("div", "il-attn-tip");
    root.appendChild(tip);

    // ---- line view (bertviz): queries on the left, keys on the right, a line per weight
    var lines = null, lctx = null, ROW = 18;
    var leftLabs = [], rightLabs = [];
    if (blk === 1 && n <= LINE_MAX) {
      var lv = el("div");
      lv.appendChild(el("p", "il-attn-axis", "line view: query → key, line opacity = weight; hover a token"));
      lines = el("div", "il-attn-lines");
      var left = el("div", "il-left"), right = el("div", "il-right");
      var lc = el("canvas"); lc.width = 160; lc.height = n * ROW; lc.style.width = "160px"; lc.style.height = (n * ROW) + "px";
      for (var j = 0; j < n; j++) {
        (function (j) {
          var a = el("bdi", P.special[j] ? "il-special" : "", labels[j]); a.title = "position " + j + ": " + reprs[j];
          var b = el("bdi", P.special[j] ? "il-special" : "", labels[j]); b.title = a.title;
          a.addEventListener("mouseenter", function () { setQuery(j); });
          left.appendChild(a); right.appendChild(b); leftLabs.push(a); rightLabs.push(b);
        })(j);
      }
      lines.addEventListener("mouseleave", function () { setQuery(-1); });
      lines.appendChild(left); lines.appendChild(lc); lines.appendChild(right);
      lv.appendChild(lines); views.appendChild(lv);
      lctx = lc.getContext("2d");
    }

    // ---- the hovered query's weights over the text
    var text = el("div", "il-attn-text");
    var spans = P.tokens.map(function (tk, i) {
      var s = el("bdi", P.special[i] ? "il-special" : "", labels[i]);
      s.title = "position " + i + ": " + reprs[i];
      s.addEventListener("mouseenter", function () { setQuery(i); });
      text.appendChild(s);
      return s;
    });
    text.addEventListener("mouseleave", function () { setQuery(-1); });
    root.appendChild(el("p", "il-attn-axis", "text: hover a token to shade what it attends to"));
    root.appendChild(text);

    var ctx = canvas.getContext("2d");
    var image = ctx.createImageData(g, g);
    function current() { var lay = layerData[state.li]; return lay ? lay[state.hi] : null; }
    function drawHeat() {
      var d = current(), px4 = image.data;
      if (!d) return;
      for (var i = 0; i < g * g; i++) {
        var cc = shade(d[i]);
        px4[4 * i] = cc[0]; px4[4 * i + 1] = cc[1]; px4[4 * i + 2] = cc[2]; px4[4 * i + 3] = 255;
      }
      ctx.putImageData(image, 0, 0);
      if (state.q >= 0) {
        ctx.strokeStyle = "#d62728"; ctx.lineWidth = Math.max(0.15, 1.5 / c);
        ctx.strokeRect(0, Math.floor(state.q / blk), g, 1);
      }
    }
    function drawLines() {
      var d = current();
      if (!lctx || !d) return;
      lctx.clearRect(0, 0, 160, n * ROW);
      for (var q = 0; q < n; q++) {
        if (state.q >= 0 && q !== state.q) continue;
        for (var k = 0; k < n; k++) {
          var w = d[q * g + k] / 255;
          if (w < 0.01) continue;
          lctx.strokeStyle = "rgba(47,111,222," + Math.min(1, (state.q >= 0 ? 1 : 0.6) * w).toFixed(3) + ")";
          lctx.lineWidth = state.q >= 0 ? 2 : 1.5;
          lctx.beginPath(); lctx.moveTo(2, q * ROW + ROW / 2); lctx.lineTo(158, k * ROW + ROW / 2); lctx.stroke();
        }
      }
      for (var m = 0; m < n; m++) {
        leftLabs[m].classList.toggle("il-q", m === state.q);
        var v = state.q >= 0 ? d[state.q * g + m] : 0, cc = shade(v);
        rightLabs[m].style.background = v ? "rgb(" + cc.join(",") + ")" : "";
      }
    }
    function paintText() {
      var d = current();
      if (!d) return;
      for (var k = 0; k < n; k++) {
        var s = spans[k];
        if (state.q < 0) { s.style.background = ""; s.classList.remove("il-q"); continue; }
        var v = d[Math.floor(state.q / blk) * g + Math.floor(k / blk)];
        var cc = shade(v);
        s.style.background = v ? "rgb(" + cc.join(",") + ")" : "";
        s.classList.toggle("il-q", k === state.q);
      }
      rowLabs.forEach(function (r, i) { if (r) r.classList.toggle("il-q", state.q >= 0 && i === Math.floor(state.q / blk)); });
    }
    function setQuery(q) { state.q = q; drawHeat(); drawLines(); paintText(); }
    canvas.addEventListener("mousemove", function (ev) {
      var r = canvas.getBoundingClientRect();
      var col = Math.min(g - 1, Math.floor((ev.clientX - r.left) / r.width * g));
      var row = Math.min(g - 1, Math.floor((ev.clientY - r.top) / r.height * g));
      var q = Math.min(n - 1, row * blk), k = Math.min(n - 1, col * blk);
      if (!current()) return;
      var v = current()[row * g + col] / 255;
      tip.textContent = (blk > 1 ? "queries " + q + "–" + Math.min(n - 1, q + blk - 1) + " → keys " + k + "–" + Math.min(n - 1, k + blk - 1)
        : q + " " + labels[q] + " → " + k + " " + labels[k]) + "   " + fmt(v);
      tip.style.display = "block";
      tip.style.left = (ev.clientX + 12) + "px"; tip.style.top = (ev.clientY + 16) + "px";
      if (q !== state.q) setQuery(q);
    });
    canvas.addEventListener("mouseleave", function () { tip.style.display = "none"; });

    // ---- model view: every kept layer x head as a small multiple, drawn only when scrolled into view
    var mwrap = el("div", "il-attn-model-wrap");
    var grid = el("div", "il-attn-model");
    grid.style.gridTemplateColumns = "repeat(" + H + ", max-content)";
    var cells = [];
    var tb = Math.ceil(g / P.thumb), t = Math.ceil(g / tb);  // thumbnail: tb x tb cells pooled per pixel
    function thumbOf(m) {  // block means of the head's image, scaled to its own maximum
      var sum = new Float32Array(t * t), cnt = new Float32Array(t * t), top = 0, out = new Uint8Array(t * t);
      for (var r = 0; r < g; r++) for (var k = 0; k < g; k++) {
        var j = Math.floor(r / tb) * t + Math.floor(k / tb);
        sum[j] += m[r * g + k]; cnt[j] += 1;
      }
      for (var i = 0; i < t * t; i++) { sum[i] /= Math.max(cnt[i], 1); top = Math.max(top, sum[i]); }
      for (var i2 = 0; i2 < t * t; i2++) out[i2] = top > 0 ? Math.round(255 * sum[i2] / top) : 0;
      return out;
    }
    function drawThumb(cv, idx) {
      var c2 = cv.getContext("2d"), im = c2.createImageData(t, t);
      var d = thumbOf(layerData[Math.floor(idx / H)][idx % H]);
      for (var i = 0; i < t * t; i++) {
        var cc = shade(d[i]);
        im.data[4 * i] = cc[0]; im.data[4 * i + 1] = cc[1]; im.data[4 * i + 2] = cc[2]; im.data[4 * i + 3] = 255;
      }
      c2.putImageData(im, 0, 0);
    }
    // thumbnails are drawn a layer at a time after the head view (inflating each layer first),
    // so a 30 x 9 model view never blocks the page
    var queue = [];
    function drainThumbs(li) {
      if (li >= L) { root.setAttribute("data-il-thumbs-done", "1"); return; }
      loadLayer(li).then(function () {
        queue.slice(li * H, (li + 1) * H).forEach(function (cv) { drawThumb(cv, cv._idx); cv._drawn = true; });
        setTimeout(function () { drainThumbs(li + 1); }, 0);
      });
    }
    for (var li = 0; li < L; li++) for (var hi = 0; hi < H; hi++) {
      (function (li, hi) {
        var cell = el("div", "il-cell"), cv = el("canvas");
        cv.width = t; cv.height = t; cv._idx = li * H + hi;
        cell.title = "layer " + P.layers[li] + ", head " + P.heads[hi];
        cell.appendChild(cv); cell.appendChild(el("span", "il-lab", "L" + P.layers[li] + " H" + P.heads[hi]));
        cell.addEventListener("click", function () { select(li, hi); });
        grid.appendChild(cell); cells.push(cell);
        queue.push(cv);
      })(li, hi);
    }
    mwrap.appendChild(el("p", "il-attn-axis", "model view: rows are layers, columns heads; click one to show it above"));
    mwrap.appendChild(grid);
    root.appendChild(mwrap);
    modelBox.addEventListener("change", function () { mwrap.style.display = modelBox.checked ? "block" : "none"; });

    function select(li, hi) {
      state.li = li; state.hi = hi; layerSel.value = li; headSel.value = hi;
      cells.forEach(function (cc, i) { cc.classList.toggle("il-on", i === li * H + hi); });
      loadLayer(li).then(function () {
        if (state.li === li && state.hi === hi) { drawHeat(); drawLines(); paintText(); }
      });
      drawHeat(); drawLines(); paintText();
    }
    layerSel.addEventListener("change", function () { select(+layerSel.value, state.hi); });
    headSel.addEventListener("change", function () { select(state.li, +headSel.value); });
    select(0, 0);
    drainThumbs(0);
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
