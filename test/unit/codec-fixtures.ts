// Hex fixtures for Codec, mqtt-packet style. The hex was produced once by mqtt-packet 9.0.2
// generate() and pasted here as literals; SPEC_LAYOUTS below checks a few byte by byte
// against MQTT 3.1.1 §3 and MQTT 5 §3.

import type { Packet } from 'mqtt-packet'
import type { ProtocolVersion } from '../../src/wire/codec.js'

export interface Row {
  name: string
  version: ProtocolVersion
  hex: string
  packet: Packet
  /** When decode accepts a shorter form, what encode writes instead of `hex`. */
  encoded?: string
}

export interface BadRow {
  name: string
  version: ProtocolVersion
  hex: string
  /** Expected error; GUARD_ERR_MALFORMED when not given. */
  code?: 'GUARD_ERR_MALFORMED' | 'GUARD_ERR_PROTOCOL'
}

const b = (s: string): Buffer => Buffer.from(s)

export const V4: Row[] = [
  { name: 'CONNECT minimal', version: 4, hex: '100e00044d5154540402003c00026331', packet: { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 60, clientId: 'c1' } },
  { name: 'CONNECT will, username, password', version: 4, hex: '102800044d51545404ec001e00056465762d37000873742f6465762d370004676f6e6500017500027077', packet: { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: false, keepalive: 30, clientId: 'dev-7', will: { topic: 'st/dev-7', payload: b('gone'), qos: 1, retain: true }, username: 'u', password: b('pw') } },
  { name: 'CONNECT 3.1 MQIsdp', version: 3, hex: '101100064d51497364700302000a00036f6c64', packet: { cmd: 'connect', protocolId: 'MQIsdp', protocolVersion: 3, clean: true, keepalive: 10, clientId: 'old' } },
  { name: 'CONNACK accepted', version: 4, hex: '20020000', packet: { cmd: 'connack', sessionPresent: false, returnCode: 0 } },
  { name: 'CONNACK session present', version: 4, hex: '20020100', packet: { cmd: 'connack', sessionPresent: true, returnCode: 0 } },
  { name: 'CONNACK not authorized', version: 4, hex: '20020005', packet: { cmd: 'connack', sessionPresent: false, returnCode: 5 } },
  { name: 'PUBLISH QoS 0', version: 4, hex: '30070003612f626869', packet: { cmd: 'publish', topic: 'a/b', payload: b('hi'), qos: 0, retain: false, dup: false } },
  { name: 'PUBLISH QoS 1 retain', version: 4, hex: '33090003612f62000a6869', packet: { cmd: 'publish', topic: 'a/b', payload: b('hi'), qos: 1, retain: true, dup: false, messageId: 10 } },
  { name: 'PUBLISH QoS 2 dup, empty payload', version: 4, hex: '3c05000178ffff', packet: { cmd: 'publish', topic: 'x', payload: b(''), qos: 2, retain: false, dup: true, messageId: 65535 } },
  { name: 'PUBACK', version: 4, hex: '4002000a', packet: { cmd: 'puback', messageId: 10 } },
  { name: 'PUBREC', version: 4, hex: '5002000b', packet: { cmd: 'pubrec', messageId: 11 } },
  { name: 'PUBREL', version: 4, hex: '6202000b', packet: { cmd: 'pubrel', messageId: 11 } },
  { name: 'PUBCOMP', version: 4, hex: '7002000b', packet: { cmd: 'pubcomp', messageId: 11 } },
  { name: 'SUBSCRIBE three filters', version: 4, hex: '821200010003612f2b000003622f230100016302', packet: { cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'a/+', qos: 0 }, { topic: 'b/#', qos: 1 }, { topic: 'c', qos: 2 }] } },
  { name: 'SUBACK with failure', version: 4, hex: '9006000100010280', packet: { cmd: 'suback', messageId: 1, granted: [0, 1, 2, 128] } },
  { name: 'UNSUBSCRIBE', version: 4, hex: 'a20c00020003612f2b0003622f23', packet: { cmd: 'unsubscribe', messageId: 2, unsubscriptions: ['a/+', 'b/#'] } },
  { name: 'UNSUBACK', version: 4, hex: 'b0020002', packet: { cmd: 'unsuback', messageId: 2 } as Packet }, // types demand granted; 3.1.1 has none
  { name: 'PINGREQ', version: 4, hex: 'c000', packet: { cmd: 'pingreq' } },
  { name: 'PINGRESP', version: 4, hex: 'd000', packet: { cmd: 'pingresp' } },
  { name: 'DISCONNECT', version: 4, hex: 'e000', packet: { cmd: 'disconnect' } }
]

export const V5: Row[] = [
  { name: 'CONNECT minimal', version: 5, hex: '100f00044d5154540502003c0000026335', packet: { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 60, clientId: 'c5' } },
  {
    name: 'CONNECT properties, will properties, username, password',
    version: 5,
    hex: '106000044d51545405d6003c2311000000782100142700000400220005190117002600016b0001761500016d16000164000263351f180000000501010200000009030001740800017209000163260001610001620001770003627965000175000170',
    packet: {
      cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 60, clientId: 'c5',
      properties: { sessionExpiryInterval: 120, receiveMaximum: 20, maximumPacketSize: 1024, topicAliasMaximum: 5, requestResponseInformation: true, requestProblemInformation: false, userProperties: { k: 'v' }, authenticationMethod: 'm', authenticationData: b('d') },
      will: { topic: 'w', payload: b('bye'), qos: 2, retain: false, properties: { willDelayInterval: 5, payloadFormatIndicator: true, messageExpiryInterval: 9, contentType: 't', responseTopic: 'r', correlationData: b('c'), userProperties: { a: 'b' } } },
      username: 'u', password: b('p')
    }
  },
  { name: 'CONNACK success', version: 5, hex: '2003000000', packet: { cmd: 'connack', sessionPresent: false, reasonCode: 0 } },
  {
    name: 'CONNACK all properties',
    version: 5,
    hex: '2047010044110000003c21000a24012500270000080012000567656e2d312200041f00026f6b26000178000179280129002a0113001e1a000272691c00037372761500016d16000164',
    packet: { cmd: 'connack', sessionPresent: true, reasonCode: 0, properties: { sessionExpiryInterval: 60, receiveMaximum: 10, maximumQoS: 1, retainAvailable: false, maximumPacketSize: 2048, assignedClientIdentifier: 'gen-1', topicAliasMaximum: 4, reasonString: 'ok', userProperties: { x: 'y' }, wildcardSubscriptionAvailable: true, subscriptionIdentifiersAvailable: false, sharedSubscriptionAvailable: true, serverKeepAlive: 30, responseInformation: 'ri', serverReference: 'srv', authenticationMethod: 'm', authenticationData: b('d') } }
  },
  { name: 'CONNACK not authorized', version: 5, hex: '2003008700', packet: { cmd: 'connack', sessionPresent: false, reasonCode: 0x87 } },
  { name: 'PUBLISH QoS 0 topicAlias', version: 5, hex: '300b0003612f62032300036869', packet: { cmd: 'publish', topic: 'a/b', payload: b('hi'), qos: 0, retain: false, dup: false, properties: { topicAlias: 3 } } },
  {
    name: 'PUBLISH QoS 1 retain, all properties, repeated user property',
    version: 5,
    hex: '33440003612f6200073a0101020000003c2300020800047265737009000269642600016b0001762600016d0001312600016d0001320b0503000a746578742f706c61696e6869',
    packet: { cmd: 'publish', topic: 'a/b', payload: b('hi'), qos: 1, retain: true, dup: false, messageId: 7, properties: { payloadFormatIndicator: true, messageExpiryInterval: 60, topicAlias: 2, responseTopic: 'resp', correlationData: b('id'), userProperties: { k: 'v', m: ['1', '2'] }, subscriptionIdentifier: 5, contentType: 'text/plain' } }
  },
  { name: 'PUBLISH QoS 2 dup, no properties', version: 5, hex: '3c070001740008007a', packet: { cmd: 'publish', topic: 't', payload: b('z'), qos: 2, retain: false, dup: true, messageId: 8 } },
  { name: 'PUBACK no reason code', version: 5, hex: '40020007', packet: { cmd: 'puback', messageId: 7, reasonCode: 0 } },
  { name: 'PUBACK reason code', version: 5, hex: '400400071000', packet: { cmd: 'puback', messageId: 7, reasonCode: 0x10 } },
  { name: 'PUBACK reason code without property length (§3.4.2.2.1)', version: 5, hex: '4003000710', encoded: '400400071000', packet: { cmd: 'puback', messageId: 7, reasonCode: 0x10 } },
  { name: 'PUBACK reason and properties', version: 5, hex: '40100007870c1f00026e6f26000161000162', packet: { cmd: 'puback', messageId: 7, reasonCode: 0x87, properties: { reasonString: 'no', userProperties: { a: 'b' } } } },
  { name: 'PUBREC no reason code', version: 5, hex: '50020008', packet: { cmd: 'pubrec', messageId: 8, reasonCode: 0 } },
  { name: 'PUBREC reason code', version: 5, hex: '500400088000', packet: { cmd: 'pubrec', messageId: 8, reasonCode: 0x80 } },
  { name: 'PUBREL no reason code', version: 5, hex: '62020008', packet: { cmd: 'pubrel', messageId: 8, reasonCode: 0 } },
  { name: 'PUBREL reason code', version: 5, hex: '620400089200', packet: { cmd: 'pubrel', messageId: 8, reasonCode: 0x92 } },
  { name: 'PUBCOMP no reason code', version: 5, hex: '70020008', packet: { cmd: 'pubcomp', messageId: 8, reasonCode: 0 } },
  { name: 'PUBCOMP reason and properties', version: 5, hex: '700b000892071f0004676f6e65', packet: { cmd: 'pubcomp', messageId: 8, reasonCode: 0x92, properties: { reasonString: 'gone' } } },
  {
    name: 'SUBSCRIBE options and properties',
    version: 5,
    hex: '821c0003090b09260001730001310003612f23050001622a0003632f2b10',
    packet: { cmd: 'subscribe', messageId: 3, properties: { subscriptionIdentifier: 9, userProperties: { s: '1' } }, subscriptions: [{ topic: 'a/#', qos: 1, nl: true, rap: false, rh: 0 }, { topic: 'b', qos: 2, nl: false, rap: true, rh: 2 }, { topic: 'c/+', qos: 0, nl: false, rap: false, rh: 1 }] }
  },
  { name: 'SUBACK reason codes and reason string', version: 5, hex: '900b0003041f00017201020087', packet: { cmd: 'suback', messageId: 3, properties: { reasonString: 'r' }, granted: [1, 2, 0, 0x87] } },
  { name: 'UNSUBSCRIBE with user property', version: 5, hex: 'a212000407260001750001760003612f23000162', packet: { cmd: 'unsubscribe', messageId: 4, properties: { userProperties: { u: 'v' } }, unsubscriptions: ['a/#', 'b'] } },
  { name: 'UNSUBACK reason codes', version: 5, hex: 'b0050004000011', packet: { cmd: 'unsuback', messageId: 4, granted: [0, 0x11] } },
  { name: 'PINGREQ', version: 5, hex: 'c000', packet: { cmd: 'pingreq' } },
  { name: 'PINGRESP', version: 5, hex: 'd000', packet: { cmd: 'pingresp' } },
  { name: 'DISCONNECT normal', version: 5, hex: 'e0020000', packet: { cmd: 'disconnect', reasonCode: 0 } },
  { name: 'DISCONNECT empty (§3.14.2.1)', version: 5, hex: 'e000', encoded: 'e0020000', packet: { cmd: 'disconnect', reasonCode: 0 } },
  { name: 'DISCONNECT reason and properties', version: 5, hex: 'e0158e1311000000001f00036279651c00056f74686572', packet: { cmd: 'disconnect', reasonCode: 0x8e, properties: { sessionExpiryInterval: 0, reasonString: 'bye', serverReference: 'other' } } },
  { name: 'AUTH continue', version: 5, hex: 'f01e181c150005534352414d1600036162631f00046d6f726526000170000171', packet: { cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'SCRAM', authenticationData: b('abc'), reasonString: 'more', userProperties: { p: 'q' } } } }
]

/** Fixtures rebuilt by hand from the spec's byte layout, field by field. */
export const SPEC_LAYOUTS: Array<{ fixture: string, version: ProtocolVersion, parts: Array<[string, string]> }> = [
  { fixture: 'CONNECT minimal', version: 4, parts: [ // MQTT 3.1.1 §3.1
    ['10', 'type 1, flags 0'], ['0e', 'remaining length 14'], ['00044d515454', 'protocol name "MQTT"'], ['04', 'level 4'],
    ['02', 'connect flags: clean session (bit 1)'], ['003c', 'keep alive 60'], ['00026331', 'client id "c1"']] },
  { fixture: 'CONNECT will, username, password', version: 4, parts: [ // §3.1.2.3: flags byte
    ['10', 'type 1'], ['28', 'remaining length 40'], ['00044d51545404', 'name, level'],
    ['ec', 'username 0x80 | password 0x40 | will retain 0x20 | will QoS 1 0x08 | will 0x04'], ['001e', 'keep alive 30'],
    ['00056465762d37', 'client id'], ['000873742f6465762d37', 'will topic'], ['0004676f6e65', 'will message'], ['000175', 'user name'], ['00027077', 'password']] },
  { fixture: 'PUBLISH QoS 1 retain', version: 4, parts: [ // §3.3.1
    ['33', 'type 3 | QoS 1 << 1 | retain'], ['09', 'remaining length 9'], ['0003612f62', 'topic "a/b"'], ['000a', 'packet id 10'], ['6869', 'payload']] },
  { fixture: 'SUBSCRIBE three filters', version: 4, parts: [ // §3.8.1: reserved flags 0010
    ['82', 'type 8, flags 0010'], ['12', 'remaining length 18'], ['0001', 'packet id'],
    ['0003612f2b00', '"a/+" QoS 0'], ['0003622f2301', '"b/#" QoS 1'], ['00016302', '"c" QoS 2']] },
  { fixture: 'PUBACK reason and properties', version: 5, parts: [ // MQTT 5 §3.4.2
    ['40', 'type 4'], ['10', 'remaining length 16'], ['0007', 'packet id'], ['87', 'reason: not authorized'], ['0c', 'property length 12'],
    ['1f00026e6f', '0x1F reason string "no"'], ['26000161000162', '0x26 user property a=b']] },
  { fixture: 'SUBSCRIBE options and properties', version: 5, parts: [ // §3.8.3.1 subscription options
    ['82', 'type 8, flags 0010'], ['1c', 'remaining length 28'], ['0003', 'packet id'], ['09', 'property length 9'],
    ['0b09', '0x0B subscription identifier 9 (varint)'], ['26000173000131', '0x26 user property s=1'],
    ['0003612f2305', '"a/#": QoS 1 | no local (bit 2)'], ['0001622a', '"b": QoS 2 | retain as published (bit 3) | retain handling 2 (bits 4-5)'],
    ['0003632f2b10', '"c/+": QoS 0, retain handling 1']] },
  { fixture: 'DISCONNECT reason and properties', version: 5, parts: [ // §3.14
    ['e0', 'type 14'], ['15', 'remaining length 21'], ['8e', 'reason: session taken over'], ['13', 'property length 19'],
    ['1100000000', '0x11 session expiry 0'], ['1f0003627965', '0x1F reason string'], ['1c00056f74686572', '0x1C server reference']] },
  { fixture: 'AUTH continue', version: 5, parts: [ // §3.15
    ['f0', 'type 15'], ['1e', 'remaining length 30'], ['18', 'reason: continue authentication'], ['1c', 'property length 28'],
    ['150005534352414d', '0x15 method "SCRAM"'], ['1600036162631f', '0x16 data "abc", then 0x1F'], ['00046d6f7265', 'reason string "more"'],
    ['26000170000171', '0x26 user property p=q']] }
]

// Each frame is well framed (its Remaining Length matches): the fault is inside the packet.
export const MALFORMED: BadRow[] = [
  { name: 'PUBREL reserved flags 0000', version: 4, hex: '6002000b' },
  { name: 'PUBREL reserved flags 0000', version: 5, hex: '6002000b' },
  { name: 'SUBSCRIBE reserved flags 0000', version: 4, hex: '800800010003612f2b00' },
  { name: 'SUBSCRIBE reserved flags 0011', version: 5, hex: '830700010000016100' },
  { name: 'UNSUBSCRIBE reserved flags 0000', version: 4, hex: 'a00700020003612f2b' },
  { name: 'PUBLISH QoS 3', version: 4, hex: '36090003612f62000a6869' },
  { name: 'PUBLISH QoS 3', version: 5, hex: '360a0003612f62000a006869' },
  { name: 'reserved packet type 0', version: 4, hex: '0000' },
  { name: 'AUTH in MQTT 3.1.1', version: 4, hex: 'f0020000' },
  { name: 'truncated: PUBLISH topic longer than packet', version: 4, hex: '30050005616263' },
  { name: 'truncated: CONNECT ends after protocol name', version: 4, hex: '100600044d515454' },
  { name: 'truncated: CONNECT user name flag, no user name', version: 4, hex: '100e00044d5154540482003c00026331' },
  { name: 'truncated: PUBACK one byte', version: 4, hex: '400100' },
  { name: 'truncated: PUBREL empty', version: 5, hex: '6200' },
  { name: 'truncated: PUBLISH QoS 1 without packet id', version: 4, hex: '32050003612f62' },
  { name: 'truncated: CONNACK one byte', version: 4, hex: '200100' },
  { name: 'truncated: SUBACK one byte', version: 4, hex: '900100' },
  { name: 'truncated: PUBLISH without property length', version: 5, hex: '30050003612f62' },
  { name: 'CONNECT reserved flag bit 0', version: 4, hex: '100e00044d5154540403003c00026331' },
  { name: 'CONNECT protocol name "MQTX"', version: 4, hex: '100e00044d5154580402003c00026331' },
  { name: 'CONNACK flags bits 7-1 set', version: 4, hex: '20020200' },
  { name: 'SUBSCRIBE option QoS 3', version: 4, hex: '8206000100016103' },
  { name: 'SUBSCRIBE retain handling 3', version: 5, hex: '820700010000016130' },
  { name: 'PUBACK invalid reason code 0x05', version: 5, hex: '400400070500' },
  { name: 'DISCONNECT invalid reason code 0x05', version: 5, hex: 'e0020500' },
  { name: 'unknown property 0xFF', version: 5, hex: '300a0003612f6202ff006869' },
  { name: 'invalid UTF-8 in topic (0xFF) [MQTT-1.5.3-1]', version: 4, hex: '3007000361ff626869' },
  { name: 'duplicated property: topicAlias twice [MQTT-2.2.2-2]', version: 5, hex: '300e0003612f62062300032300046869', code: 'GUARD_ERR_PROTOCOL' },
  { name: 'duplicated property: payloadFormatIndicator twice', version: 5, hex: '300c0003612f6204010101016869', code: 'GUARD_ERR_PROTOCOL' },
  // Found by the fuzz test: mqtt-packet only notices repeats of truthy values.
  { name: 'duplicated property: payloadFormatIndicator 0 twice', version: 5, hex: '300c0003612f6204010001006869', code: 'GUARD_ERR_PROTOCOL' },
  { name: 'duplicated property: CONNECT sessionExpiryInterval 0 twice', version: 5, hex: '101900044d5154540502003c0a1100000000110000000000026335', code: 'GUARD_ERR_PROTOCOL' },
  { name: 'duplicated property: will delay 0 twice', version: 5, hex: '101f00044d5154540506003c0000026335' + '0a18000000001800000000' + '0001740000', code: 'GUARD_ERR_PROTOCOL' },
  { name: 'duplicated property: DISCONNECT empty reason string twice', version: 5, hex: 'e00800061f00001f0000', code: 'GUARD_ERR_PROTOCOL' },
  // Bytes after the last field, which mqtt-packet ignores.
  { name: 'CONNECT with a byte after its last field', version: 4, hex: '100f00044d5154540402003c00026331ff' },
  { name: 'DISCONNECT with a body in 3.1.1', version: 4, hex: 'e00100' },
  { name: 'PINGREQ with a body', version: 4, hex: 'c00100' },
  { name: 'AUTH with a byte after its properties', version: 5, hex: 'f0031800ff' },
  { name: 'CONNACK with a byte after its properties', version: 5, hex: '2004000000ff' },
  { name: 'PUBACK with a byte after its properties', version: 5, hex: '4008000710031f0000ff' },
  // Names and filters.
  { name: 'CONNECT password without user name [MQTT-3.1.2-22]', version: 4, hex: '101200044d5154540442003c0002633100027077', code: 'GUARD_ERR_PROTOCOL' },
  { name: 'CONNECT client identifier not UTF-8', version: 4, hex: '100e00044d5154540402003c0002c328' },
  { name: 'CONNECT client identifier with U+0000 [MQTT-1.5.4-2]', version: 4, hex: '100e00044d5154540402003c00026100' },
  { name: 'PUBLISH topic with U+0000', version: 4, hex: '30070003610062' + '6869' },
  { name: 'SUBSCRIBE filter not UTF-8', version: 4, hex: '820700010002c32800' },
  { name: 'SUBSCRIBE filter "a/b#"', version: 4, hex: '820900010004612f622300' },
  { name: 'UNSUBSCRIBE shared subscription without a filter', version: 5, hex: 'a20d00020000082473686172652f67' }
]
