// quota.test.ts on a Redis Cluster (3 primaries, 3 replicas), in a process of its own: the
// same suite, the same assertions; test/helpers/redis-under-test.ts reads the variable.

process.env['MQTT_GUARD_TEST_REDIS'] = 'cluster'
await import('./quota.test.js')
