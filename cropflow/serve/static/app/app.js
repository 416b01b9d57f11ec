// cropflow web map: published maps as tiles, legend, point query, areas, on-demand jobs.
"use strict";

const state = { region: null, map: null, layers: {}, control: null, aoi: null, drawing: null };

async function getJSON(url, options) {
  const response = await fetch(url, options);
  const body = await response.json();
  if (!response.ok) {
    const d = body.detail || {};
    throw new Error((d.field ? d.field + ": " : "") + (d.error || response.statusText) + (d.hint ? " (" + d.hint + ")" : ""));
  }
  return body;
}

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function tiles(region, layer) {
  const tileLayer = L.tileLayer(`/maps/${region}/tiles/${layer}/{z}/{x}/{y}.png`, {
    maxZoom: 22, maxNativeZoom: 18, opacity: layer === "confidence" ? 0.85 : 1.0, className: "layer-" + layer,
  });
  // data-loaded-<layer>="<region>" while every visible tile of the layer is drawn (tests wait on it).
  tileLayer.on("loading", () => document.body.removeAttribute("data-loaded-" + layer));
  tileLayer.on("load", () => document.body.setAttribute("data-loaded-" + layer, region));
  return tileLayer;
}

async function showRegion(region) {
  const m = await getJSON(`/maps/${region}`);
  state.region = region;
  Object.values(state.layers).forEach((layer) => state.map.removeLayer(layer));
  if (state.control) state.map.removeControl(state.control);
  state.layers = {};
  const names = { class_map: "Class map", confidence: "Confidence", truecolor: "True colour" };
  m.layers.forEach((layer) => { state.layers[names[layer] || layer] = tiles(region, layer); });
  const [w, s, e, n] = m.bbox;
  state.map.fitBounds([[s, w], [n, e]], { animate: false });
  state.layers["Class map"].addTo(state.map);
  state.control = L.control.layers(state.layers, {}, { collapsed: false }).addTo(state.map);
  const model = m.model || {};
  document.getElementById("about").textContent =
    `${m.start ? m.start.slice(0, 10) : "?"} .. ${m.end ? m.end.slice(0, 10) : "?"} · model ${model.name || "?"} v${model.version || "?"}${model.alias ? " (" + model.alias + ")" : ""}`;
  const legend = document.getElementById("legend");
  legend.replaceChildren(...m.classes.map((c) => {
    const li = el("li", { "data-class": c.name });
    li.append(el("span", { class: "swatch", style: `background:${c.color}` }), el("span", {}, c.name));
    return li;
  }));
  const areas = await getJSON(`/maps/${region}/areas`);
  const body = document.querySelector("#areas tbody");
  body.replaceChildren(...(areas.class_area || []).map((r) => {
    const tr = el("tr", { "data-class": r.class_name });
    tr.append(el("td", {}, r.class_name), el("td", { class: "num" }, Number(r.area_ha).toFixed(2)),
      el("td", { class: "num" }, (100 * Number(r.fraction)).toFixed(1) + " %"));
    return tr;
  }));
  const estimate = document.getElementById("estimate");
  document.body.setAttribute("data-region", region);
  estimate.textContent = areas.class_area_estimate ? `Area estimate with confidence intervals: ${areas.class_area_estimate.length} classes (class_area_estimate.csv).` : "";
}

async function pointQuery(latlng) {
  const box = document.getElementById("point");
  try {
    const p = await getJSON(`/maps/${state.region}/point?lon=${latlng.lng}&lat=${latlng.lat}`);
    if (p.class_name === null) { box.textContent = "No class here."; return; }
    const top = Object.entries(p.probabilities).sort((a, b) => b[1] - a[1]).slice(0, 3)
      .map(([k, v]) => `${k} ${(100 * v).toFixed(0)} %`).join(", ");
    box.replaceChildren(el("strong", { id: "point-class" }, p.class_name),
      el("div", {}, `confidence ${p.confidence === null ? "?" : (100 * p.confidence).toFixed(0) + " %"}`),
      el("div", {}, top), el("div", {}, p.field_id ? `field ${p.field_id}` : ""));
    L.popup().setLatLng(latlng).setContent(p.class_name).openOn(state.map);
  } catch (err) {
    box.replaceChildren(el("span", { class: "error" }, err.message));
  }
}

function onMapClick(event) {
  if (state.drawing) {
    state.drawing.push(event.latlng);
    if (state.drawing.length === 2) {
      const bounds = L.latLngBounds(state.drawing);
      if (state.aoi) state.map.removeLayer(state.aoi);
      state.aoi = L.rectangle(bounds, { color: "#d00", weight: 2, fill: false }).addTo(state.map);
      state.drawing = null;
      document.getElementById("aoi").textContent =
        [bounds.getWest(), bounds.getSouth(), bounds.getEast(), bounds.getNorth()].map((v) => v.toFixed(5)).join(", ");
    }
    return;
  }
  pointQuery(event.latlng);
}

async function submitJob(event) {
  event.preventDefault();
  const form = event.target;
  const out = document.getElementById("jobstate");
  if (!state.aoi) { out.replaceChildren(el("span", { class: "error" }, "aoi: draw an AOI first")); return; }
  const b = state.aoi.getBounds();
  const request = {
    aoi: [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()],
    start: form.start.value, end: form.end.value, alias: form.alias.value,
  };
  try {
    let job = await getJSON("/maps", {
      method: "POST", body: JSON.stringify(request),
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + form.token.value },
    });
    while (!job.done) {
      out.textContent = `job ${job.id}: ${job.state_name || job.state}`;
      await new Promise((resolve) => setTimeout(resolve, 1000));
      job = await getJSON(`/maps/jobs/${job.id}`);
    }
    out.textContent = `job ${job.id}: ${job.state_name || job.state}${job.message ? " — " + job.message : ""}`;
    if (job.map) { await loadMaps(job.region); }
  } catch (err) {
    out.replaceChildren(el("span", { class: "error" }, err.message));
  }
}

async function loadMaps(select) {
  const maps = await getJSON("/maps");
  const chooser = document.getElementById("region");
  chooser.replaceChildren(...maps.map((m) => el("option", { value: m.region }, m.region)));
  if (!maps.length) { document.getElementById("about").textContent = "No published map yet: run a remap."; return; }
  const region = select || (maps[0] && maps[0].region);
  chooser.value = region;
  await showRegion(region);
}

function main() {
  state.map = L.map("map").setView([52.1, 13.7], 12);
  state.map.on("click", onMapClick);
  document.getElementById("region").addEventListener("change", (e) => showRegion(e.target.value));
  document.getElementById("draw").addEventListener("click", () => { state.drawing = []; });
  document.getElementById("job").addEventListener("submit", submitJob);
  loadMaps().then(() => document.body.setAttribute("data-ready", "true"))
    .catch((err) => { document.getElementById("about").textContent = err.message; });
}

main();
