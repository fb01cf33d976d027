// Starts Azurite's blob service from one bundled file with V8's code cache beside it:
//
//   node azurite_start.js BUNDLE [Azurite's flags...]
//
// BUNDLE is Azurite's blob service and its dependencies in one file, made by `make install`
// with esbuild (scripts/install.sh). Azurite's own start finds, reads and compiles some 1,500
// modules: 2.6 s of CPU on a 2-core machine, on the path of every `up` and of every restart of
// a killed storage node; bundled, 1.7 s; with the code cache, 1.0 s. The cache (BUNDLE.v8cache,
// beside the root-owned bundle) is written once Azurite has started, and again whenever V8
// rejects it (another Node.js).
"use strict";
const fs = require("fs");
const path = require("path");
const vm = require("vm");
const Module = require("module");

const bundle = path.resolve(process.argv[2]);
const cache = `${bundle}.v8cache`;
const source = fs.readFileSync(bundle, "utf8").replace(/^#!.*/, "");
let cachedData;
try {
  cachedData = fs.readFileSync(cache);
} catch (err) {
  cachedData = undefined;
}
const script = new vm.Script(Module.wrap(source), { filename: bundle, cachedData });
if (cachedData === undefined || script.cachedDataRejected) {
  setTimeout(() => {
    const tmp = `${cache}.${process.pid}`;
    try {
      fs.writeFileSync(tmp, script.createCachedData(), { mode: 0o644 });
      fs.renameSync(tmp, cache);
    } catch (err) {
      fs.rmSync(tmp, { force: true });
    }
  }, 3000).unref();
}
// The port, listening since the node's supervisor started (CLOUDHPC_LISTEN_FD): Azurite's
// server listens on that socket instead of binding its own (only its own start knows no fd)
const listenFd = process.env.CLOUDHPC_LISTEN_FD;
delete process.env.CLOUDHPC_LISTEN_FD;
if (listenFd !== undefined) {
  const net = require("net");
  const listen = net.Server.prototype.listen;
  net.Server.prototype.listen = function (...args) {
    const done = args.find((a) => typeof a === "function");
    return listen.call(this, { fd: Number(listenFd) }, (...result) => {
      // started with the least CPU share (cloudhpc.node.priority): serving now
      try {
        fs.writeFileSync("/proc/self/autogroup", "0");
      } catch (err) {
        // no autogroups here
      }
      if (done) done(...result);
    });
  };
}
// Azurite reads its flags from process.argv as if it had been started itself
process.argv.splice(1, 2, bundle);
const main = new Module(bundle, null);
main.filename = bundle;
main.paths = Module._nodeModulePaths(path.dirname(bundle));
// packages left out of the bundle (lokijs: azurite_durable.js patches it) load from
// node_modules as usual
const load = (id) => main.require(id);
script.runInThisContext().call(main.exports, main.exports, load, main, bundle,
                               path.dirname(bundle));
