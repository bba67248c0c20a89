// acl: who may publish, subscribe and receive what. See README.md.
// Publishes (and the will) are checked as `publish`, each SUBSCRIBE filter as `subscribe`,
// each delivery from the broker as `receive`; the first YAML rule that matches decides, then
// the Mosquitto acl_file, then default deny. Every denial is logged once, with the rule.

import { definePlugin } from '../../src/plugin/api.js'
import { WatchedFile } from '../../src/plugin/watched-file.js'
import { parseMosquittoAcl, type MosquittoAcl } from './mosquitto-acl.js'
import { aclOptions, checkAclOptions, validateOptions, type AclOptions } from './options.js'
import { buildPolicy, resolveAclFile } from './policy.js'
import { AclHooks } from './hooks.js'
import { aclCheck } from './acl-check.js'
import { HttpAuthz } from './http-authz.js'

export { validateOptions, buildPolicy, resolveAclFile, type AclOptions }

export default definePlugin<AclOptions>({
  name: 'acl',
  options: aclOptions,
  validate: checkAclOptions,
  commands: { 'acl-check': aclCheck },
  create (ctx) {
    const file = resolveAclFile(ctx.options, ctx.configDir)
    // Read now (a bad file stops the start); later re-read atomically on change and SIGHUP.
    let watched = file === undefined ? undefined : new WatchedFile<MosquittoAcl>(file, parseMosquittoAcl, ctx.log)
    watched?.watch()
    const http = new HttpAuthz(ctx, ctx.options.http)
    const hooks = new AclHooks(buildPolicy(ctx.options, () => watched?.value), ctx.options.onDeniedPublish, http)
    http.rules((conn, req) => hooks.local(conn, req))
    return {
      name: 'acl',
      in: {
        connect: (conn, packet) => http.connect(conn, packet, () => hooks.connect(conn, packet)),
        publish: (conn, packet) => http.publish(conn, packet, () => hooks.publish(conn, packet)),
        pubrel: (conn, packet) => hooks.pubrelIn(conn, packet),
        subscribe: (conn, packet) => http.subscribe(conn, packet, () => hooks.subscribe(conn, packet))
      },
      out: {
        publish: (conn, packet) => hooks.deliver(conn, packet),
        pubrel: (conn, packet) => hooks.pubrelOut(conn, packet),
        suback: (conn, packet) => hooks.suback(conn, packet)
      },
      willAtClose: (conn) => http.willAtClose(() => hooks.willAtClose(conn)),
      diagnose: () => [...hooks.diagnose(), ...http.diagnose()],
      reload: () => { watched?.reload(); http.clear() },
      // A reload's new options: the rules (and the acl_file they name) decide every connection's
      // next packet, open ones included. A file that cannot be read refuses them whole.
      reconfigure: (raw) => {
        const options = raw as AclOptions
        const nextFile = resolveAclFile(options, ctx.configDir)
        const same = nextFile !== undefined && nextFile === watched?.file
        const nextWatched = nextFile === undefined ? undefined : same ? watched : new WatchedFile<MosquittoAcl>(nextFile, parseMosquittoAcl, ctx.log)
        if (!same) nextWatched?.watch()
        hooks.replace(buildPolicy(options, () => nextWatched?.value), options.onDeniedPublish)
        http.configure(options.http)
        if (!same) watched?.close()
        watched = nextWatched
      },
      close: () => { watched?.close() }
    }
  }
})
