// A plugin that hooks PUBLISH in both directions and decides nothing: what any PUBLISH hook
// costs (the packet is decoded for the chain, then forwarded as its original bytes).

import type { PluginDefinition } from '../../src/plugin/api.js'

const definition: PluginDefinition = {
  name: 'bench-noop-publish',
  create: () => ({
    name: 'bench-noop-publish',
    in: { publish: () => undefined },
    out: { publish: () => undefined }
  })
}

export default definition
