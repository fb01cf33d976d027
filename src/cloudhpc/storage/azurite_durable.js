// Loaded into Azurite with `node --require` by cloudhpc's storage node.
// Azurite keeps blob metadata in LokiJS databases that it saves to disk every 5 s, so a crash
// loses blobs stored in the last 5 s. This shortens that interval (CLOUDHPC_AZURITE_SAVE_MS,
// default 100 ms) and saves on request: cloudhpc's client (storage/blob.py), once Azurite has
// answered a write, asks for a save in the directory SYNC_DIR beside the databases and reports
// the write as done only when that save has been made, so nothing it acknowledged is lost
// when Azurite dies.
//
// The protocol (a directory only root can enter, like the rest of the store's data):
//   instance      this process's id, written at start
//   NAME.req      a client's request: every database is saved, starting after the request
//                 was seen (so after the write the client had been answered for)
//   NAME.done     ... then the request is renamed to this
//   NAME.lost     a request an earlier process left: what it was for may be lost with it
// A client reads `instance` before its write and again after NAME.done: another id means
// Azurite restarted meanwhile, and the write may have gone with the process that took it.
"use strict";
const fs = require("fs");
const path = require("path");
const Module = require("module");

const interval = Number(process.env.CLOUDHPC_AZURITE_SAVE_MS || 100);
const SYNC_DIR = "cloudhpc-sync";
const originalLoad = Module._load;
let patched = null;
const databases = new Set();
let syncDir = null;
let scheduled = false;

function settle(names, suffix) {
  for (const name of names) {
    const base = name.slice(0, -".req".length);
    try {
      fs.renameSync(path.join(syncDir, name), path.join(syncDir, base + suffix));
    } catch (err) {
      // the client gave up and removed its request
    }
  }
}

function serveRequests() {
  scheduled = false;
  let names;
  try {
    names = fs.readdirSync(syncDir).filter((n) => n.endsWith(".req"));
  } catch (err) {
    return;
  }
  if (names.length === 0 || databases.size === 0) {
    return;
  }
  let left = databases.size;
  let failed = false;
  for (const db of databases) {
    // a save already under way is followed by a new one (Loki's throttled saves)
    db.saveDatabase((err) => {
      failed = failed || Boolean(err);
      left -= 1;
      if (left === 0) {
        settle(names, failed ? ".lost" : ".done");
      }
    });
  }
}

function schedule() {
  if (!scheduled) {
    scheduled = true;
    setImmediate(serveRequests);
  }
}

function startSync(filename) {
  if (syncDir !== null) {
    return;
  }
  syncDir = path.join(path.dirname(path.resolve(filename)), SYNC_DIR);
  fs.mkdirSync(syncDir, { recursive: true, mode: 0o700 });
  for (const name of fs.readdirSync(syncDir)) {
    if (name.endsWith(".req")) {
      settle([name], ".lost");
    } else if (name.endsWith(".done") || name.endsWith(".lost")) {
      // a client that never came back for its answer
      const file = path.join(syncDir, name);
      try {
        if (Date.now() - fs.statSync(file).mtimeMs > 3600 * 1000) {
          fs.unlinkSync(file);
        }
      } catch (err) {
        // gone meanwhile
      }
    }
  }
  const id = `${process.pid}-${Date.now()}`;
  const tmp = path.join(syncDir, `instance.${process.pid}`);
  fs.writeFileSync(tmp, id, { mode: 0o600 });
  fs.renameSync(tmp, path.join(syncDir, "instance"));
  fs.watch(syncDir, schedule).unref();
  // inotify is the path; a slow poll in case an event was missed
  setInterval(schedule, 1000).unref();
}

Module._load = function load(request, parent, isMain) {
  const loaded = originalLoad.call(this, request, parent, isMain);
  if (request !== "lokijs") {
    return loaded;
  }
  if (patched === null) {
    const Loki = loaded;
    patched = function DurableLoki(filename, options) {
      const opts = Object.assign({}, options);
      if (!opts.autosave) {
        return new Loki(filename, opts);
      }
      opts.autosaveInterval = Math.min(opts.autosaveInterval || interval, interval);
      const db = new Loki(filename, opts);
      startSync(filename);
      // served once Azurite has loaded it and saved it a first time (before, a save would
      // write an empty database over the saved one)
      db.saveDatabase = function saveDatabase(callback) {
        Loki.prototype.saveDatabase.call(db, (err) => {
          if (!err && !databases.has(db)) {
            databases.add(db);
            schedule();
          }
          if (typeof callback === "function") {
            callback(err);
          }
        });
      };
      return db;
    };
    Object.setPrototypeOf(patched, Loki);
    patched.prototype = Loki.prototype;
  }
  return patched;
};
