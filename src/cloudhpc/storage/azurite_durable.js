// Loaded into Azurite with `node --require` by cloudhpc's storage node.
// Azurite keeps blob metadata in LokiJS databases that it saves to disk every 5 s, so a crash
// loses blobs stored in the last 5 s. This shortens that interval (CLOUDHPC_AZURITE_SAVE_MS,
// default 100 ms); cloudhpc's client then waits for the next save before it reports a write
// as done (see storage/blob.py), so nothing it acknowledged is lost when Azurite dies.
"use strict";
const Module = require("module");
const interval = Number(process.env.CLOUDHPC_AZURITE_SAVE_MS || 100);
const originalLoad = Module._load;
let patched = null;

Module._load = function load(request, parent, isMain) {
  const loaded = originalLoad.call(this, request, parent, isMain);
  if (request !== "lokijs") {
    return loaded;
  }
  if (patched === null) {
    const Loki = loaded;
    patched = function DurableLoki(filename, options) {
      const opts = Object.assign({}, options);
      if (opts.autosave) {
        opts.autosaveInterval = Math.min(opts.autosaveInterval || interval, interval);
      }
      return new Loki(filename, opts);
    };
    Object.setPrototypeOf(patched, Loki);
    patched.prototype = Loki.prototype;
  }
  return patched;
};
