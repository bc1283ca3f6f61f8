(function () {
"use strict";
var data = JSON.parse(document.getElementById("nimask-data").textContent);
var cases = data.cases;
var KEY = "nimask-ratings:" + data.batch;
var root = document.documentElement;
root.classList.add("js");
var $ = function (id) { return document.getElementById(id); };
var cards = {}, rows = {};
Array.prototype.forEach.call(document.querySelectorAll(".card[data-i]"), function (el) {
  cards[el.getAttribute("data-i")] = el;
});
Array.prototype.forEach.call(document.querySelectorAll("#table tbody tr[data-i]"), function (el) {
  rows[el.getAttribute("data-i")] = el;
});
var storage = null;
try { storage = window.localStorage; storage.getItem(KEY); } catch (e) { storage = null; }
function load(key, fallback) {
  if (!storage) { return fallback; }
  try { var v = storage.getItem(key); return v === null ? fallback : JSON.parse(v); }
  catch (e) { return fallback; }
}
function store(key, value) {
  if (!storage) { return; }
  try { storage.setItem(key, JSON.stringify(value)); }
  catch (e) { storage = null; $("storage-warn").hidden = false; }
}
if (!storage) { $("storage-warn").hidden = false; }
$("keys").hidden = false;
var ratings = load(KEY, {});
if (typeof ratings !== "object" || ratings === null) { ratings = {}; }
var state = { sort: "input", dir: 1, view: load("nimask-view", "grid"), order: [], shown: [],
              pos: -1, open: false };
$("f-reviewer").value = load("nimask-reviewer", "");
$("f-advance").checked = load("nimask-advance", true) !== false;

var RANK = { bad: 0, unsure: 1, good: 2 };
function ratingOf(c) { var r = ratings[c.name]; return r && r.rating ? r.rating : ""; }
function keyOf(c, key) {
  switch (key) {
    case "input": return c.i;
    case "name": return c.name.toLowerCase();
    case "coverage": return c.coverage;
    case "z": return c.z === null ? null : Math.abs(c.z);
    case "volume": return c.volume;
    case "components": return c.components;
    case "flags": return c.flags.length;
    case "status": return c.status;
    case "rating": var r = ratingOf(c); return r ? RANK[r] : null;
    case "earlier": return c.earlier ? RANK[c.earlier] : null;
  }
  return c.i;
}
function compare(a, b) {
  var ka = keyOf(a, state.sort), kb = keyOf(b, state.sort);
  if (ka === null || ka === undefined) { return (kb === null || kb === undefined) ? a.i - b.i : 1; }
  if (kb === null || kb === undefined) { return -1; }
  if (ka < kb) { return -state.dir; }
  if (ka > kb) { return state.dir; }
  return a.i - b.i;
}
function passes(c) {
  var st = $("f-status").value, fl = $("f-flag").value, ra = $("f-rating").value;
  if (st && c.status !== st) { return false; }
  if (fl === "*" && !c.flags.length) { return false; }
  if (fl === "-" && c.flags.length) { return false; }
  if (fl && fl !== "*" && fl !== "-" && c.flags.indexOf(fl) < 0) { return false; }
  var r = ratingOf(c);
  if (ra === "-" && r) { return false; }
  if (ra && ra !== "-" && r !== ra) { return false; }
  var lo = parseFloat($("f-cmin").value), hi = parseFloat($("f-cmax").value);
  if (!isNaN(lo) && !(c.coverage !== null && c.coverage >= lo)) { return false; }
  if (!isNaN(hi) && !(c.coverage !== null && c.coverage <= hi)) { return false; }
  var t = $("f-text").value.trim().toLowerCase();
  if (t && c.name.toLowerCase().indexOf(t) < 0) { return false; }
  return true;
}
function apply() {
  var current = state.pos >= 0 ? state.shown[state.pos] : null;
  state.order = cases.slice().sort(compare).map(function (c) { return c.i; });
  var grid = $("grid"), body = document.querySelector("#table tbody");
  state.shown = [];
  state.order.forEach(function (i) {
    var ok = passes(cases[i]);
    if (cards[i]) { grid.appendChild(cards[i]); cards[i].hidden = !ok; }
    if (rows[i]) { body.appendChild(rows[i]); rows[i].hidden = !ok; }
    if (ok) { state.shown.push(i); }
  });
  Array.prototype.forEach.call(document.querySelectorAll("th[data-sort]"), function (th) {
    th.classList.toggle("sorted", th.getAttribute("data-sort") === state.sort);
  });
  $("f-sort").value = state.sort;
  $("f-dir").textContent = state.dir > 0 ? "ascending" : "descending";
  var at = current === null ? -1 : state.shown.indexOf(current);
  select(at >= 0 ? at : (state.shown.length ? 0 : -1), false);
  counts();
}
function counts() {
  var n = { good: 0, bad: 0, unsure: 0 }, total = 0;
  cases.forEach(function (c) { var r = ratingOf(c); if (r) { n[r] += 1; total += 1; } });
  $("progress").textContent = "rated " + total + " of " + cases.length + " (good " + n.good +
    ", bad " + n.bad + ", unsure " + n.unsure + ")";
  $("shown").textContent = state.shown.length + " shown";
}
function setView(view) {
  state.view = view === "table" ? "table" : "grid";
  root.classList.toggle("view-table", state.view === "table");
  root.classList.toggle("view-grid", state.view === "grid");
  $("f-view").value = state.view;
  store("nimask-view", state.view);
  select(state.pos, true);
}
function badge(el, r) {
  if (!el) { return; }
  el.textContent = r;
  el.className = "rating" + (r ? " r-" + r : "");
}
function paint(i) {
  var r = ratingOf(cases[i]);
  if (cards[i]) { badge(cards[i].querySelector(".rating"), r); }
  if (rows[i]) { badge(rows[i].querySelector(".rating"), r); }
}
function select(pos, scroll) {
  var old = state.pos >= 0 ? state.shown[state.pos] : null;
  if (old !== null && old !== undefined) {
    if (cards[old]) { cards[old].classList.remove("current"); }
    if (rows[old]) { rows[old].classList.remove("current"); }
  }
  state.pos = pos;
  if (pos < 0 || pos >= state.shown.length) { state.pos = -1; if (state.open) { close(); } return; }
  var i = state.shown[pos];
  var el = state.view === "table" ? rows[i] : cards[i];
  if (cards[i]) { cards[i].classList.add("current"); }
  if (rows[i]) { rows[i].classList.add("current"); }
  if (scroll && el && el.scrollIntoView) { el.scrollIntoView({ block: "nearest" }); }
  if (state.open) { fill(); }
}
function move(step) {
  if (!state.shown.length) { return; }
  var pos = state.pos < 0 ? 0 : Math.min(state.shown.length - 1, Math.max(0, state.pos + step));
  select(pos, true);
}
function fill() {
  var c = cases[state.shown[state.pos]];
  $("v-pos").textContent = (state.pos + 1) + " / " + state.shown.length;
  $("v-name").textContent = c.name;
  $("v-status").textContent = c.status;
  var img = $("v-img");
  if (c.png) { img.src = c.png; img.alt = c.name; img.hidden = false; }
  else { img.removeAttribute("src"); img.hidden = true; }
  $("v-err").textContent = c.status === "failed" ? "failed, no mask written: " + c.error : (c.png ? "" : "no picture");
  var meta = [];
  if (c.coverage !== null) { meta.push("coverage " + c.coverage.toFixed(2) + " %"); }
  if (c.z !== null) { meta.push("coverage z " + c.z.toFixed(2)); }
  if (c.volume !== null) { meta.push(c.volume.toFixed(1) + " mL"); }
  if (c.components !== null) { meta.push(c.components + " component(s)"); }
  if (c.threshold) { meta.push(c.threshold); }
  $("v-meta").textContent = meta.join(" \u00b7 ");
  $("v-flags").textContent = c.flags.length ? "flags: " + c.flags.join(", ") : "no flags";
  $("v-earlier").textContent = c.earlier || c.earlierNote ? "earlier rating: " +
    (c.earlier || "(none)") + (c.earlierNote ? ": " + c.earlierNote : "") +
    (c.earlierReviewer ? " (" + c.earlierReviewer + ")" : "") : "";
  var ul = $("v-notes");
  while (ul.firstChild) { ul.removeChild(ul.firstChild); }
  c.notes.forEach(function (n) { var li = document.createElement("li"); li.textContent = n; ul.appendChild(li); });
  var r = ratings[c.name] || {};
  Array.prototype.forEach.call(document.querySelectorAll(".vrate button"), function (b) {
    b.classList.toggle("on", (b.getAttribute("data-rate") || "") === (r.rating || "") && !!r.rating);
  });
  $("v-rated").textContent = r.rating ? "rated " + r.rating : "not rated";
  $("v-note").value = r.note || "";
}
function open() {
  if (state.pos < 0) { move(0); }
  if (state.pos < 0) { return; }
  state.open = true;
  $("viewer").hidden = false;
  fill();
}
function close() {
  state.open = false;
  $("viewer").hidden = true;
  $("v-note").blur();
  select(state.pos, true);
}
function entry(c) {
  var r = ratings[c.name] || { rating: "", note: "" };
  r.reviewer = $("f-reviewer").value.trim();
  r.time = new Date().toISOString();
  ratings[c.name] = r;
  return r;
}
function rate(value) {
  if (state.pos < 0) { return; }
  var i = state.shown[state.pos], c = cases[i];
  var r = entry(c);
  r.rating = value;
  if (!r.rating && !r.note) { delete ratings[c.name]; }
  store(KEY, ratings);
  paint(i);
  counts();
  if (state.open) { fill(); }
  if (value && $("f-advance").checked && state.pos < state.shown.length - 1) { move(1); }
}
function csvCell(v) {
  v = v === null || v === undefined ? "" : String(v);
  return /[",\r\n]/.test(v) ? "\"" + v.replace(/"/g, "\"\"") + "\"" : v;
}
function exportCsv() {
  var lines = ["input,output,rating,note,reviewer,time"];
  cases.forEach(function (c) {
    var r = ratings[c.name];
    if (r && (r.rating || r.note)) {
      lines.push([c.input, c.output, r.rating || "", r.note || "", r.reviewer || "",
                  r.time || ""].map(csvCell).join(","));
    }
  });
  var blob = new Blob([lines.join("\n") + "\n"], { type: "text/csv" });
  var a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "ratings.csv";
  document.body.appendChild(a);
  a.click();
  setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}
function typing(el) {
  return el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT");
}
document.addEventListener("keydown", function (ev) {
  if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
  if (typing(ev.target)) {
    if (ev.key === "Escape" || (ev.key === "Enter" && ev.target.tagName !== "SELECT" &&
        !ev.shiftKey)) { ev.preventDefault(); ev.target.blur(); }
    return;
  }
  var handled = true;
  switch (ev.key) {
    case "j": case "ArrowDown": case "ArrowRight": move(1); break;
    case "k": case "ArrowUp": case "ArrowLeft": move(-1); break;
    case "Enter": case "o": open(); break;
    case "Escape": if (state.open) { close(); } else { handled = false; } break;
    case "g": case "1": rate("good"); break;
    case "b": case "2": rate("bad"); break;
    case "u": case "3": rate("unsure"); break;
    case "x": case "0": rate(""); break;
    case "n": if (!state.open) { open(); } if (state.open) { $("v-note").focus(); } break;
    case "v": setView(state.view === "grid" ? "table" : "grid"); break;
    case "/": $("f-text").focus(); break;
    case "e": exportCsv(); break;
    default: handled = false;
  }
  if (handled) { ev.preventDefault(); }
});
$("v-note").addEventListener("input", function () {
  if (state.pos < 0) { return; }
  var c = cases[state.shown[state.pos]];
  var r = entry(c);
  r.note = $("v-note").value;
  if (!r.rating && !r.note) { delete ratings[c.name]; }
  store(KEY, ratings);
});
$("v-close").addEventListener("click", close);
Array.prototype.forEach.call(document.querySelectorAll(".vrate button"), function (b) {
  b.addEventListener("click", function () { rate(b.getAttribute("data-rate") || ""); });
});
["f-status", "f-flag", "f-rating", "f-cmin", "f-cmax", "f-text"].forEach(function (id) {
  $(id).addEventListener("input", apply);
});
$("f-sort").addEventListener("change", function () { state.sort = $("f-sort").value; apply(); });
$("f-dir").addEventListener("click", function () { state.dir = -state.dir; apply(); });
$("f-view").addEventListener("change", function () { setView($("f-view").value); });
$("f-reviewer").addEventListener("input", function () { store("nimask-reviewer", $("f-reviewer").value); });
$("f-advance").addEventListener("change", function () { store("nimask-advance", $("f-advance").checked); });
$("export").addEventListener("click", exportCsv);
Array.prototype.forEach.call(document.querySelectorAll("th[data-sort]"), function (th) {
  th.addEventListener("click", function () {
    var key = th.getAttribute("data-sort");
    if (state.sort === key) { state.dir = -state.dir; } else { state.sort = key; state.dir = 1; }
    apply();
  });
});
function clickCase(ev) {
  var el = ev.target.closest("[data-i]");
  if (!el || ev.target.closest("a") && !ev.target.closest("a.pic")) { return; }
  var pos = state.shown.indexOf(parseInt(el.getAttribute("data-i"), 10));
  if (pos < 0) { return; }
  ev.preventDefault();
  select(pos, false);
  open();
}
$("grid").addEventListener("click", clickCase);
document.querySelector("#table tbody").addEventListener("click", clickCase);
cases.forEach(function (c) { paint(c.i); });
setView(state.view);
apply();
var hash = decodeURIComponent(location.hash.slice(1));
if (hash) {
  cases.forEach(function (c) { if (c.name === hash) { select(state.shown.indexOf(c.i), true); } });
}
})();
