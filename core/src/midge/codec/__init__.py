"""midge.codec: the sans-I/O MQTT codec (3.1, 3.1.1 and 5.0), one public façade.

The rule: this package imports no I/O library; it turns bytes into packet objects and
back, and reports every violation as a ProtocolError carrying a reason code.
"""

from __future__ import annotations

from ._decode import Decoder, Role
from ._encode import encode, frame_publish, plain_ack, publish_header, publish_pieces
from ._errors import (
    LocalProtocolError,
    MalformedPacket,
    PacketTooLarge,
    ProtocolError,
    ProtocolViolation,
    RemoteProtocolError,
    UnsupportedProtocolVersion,
)
from ._packets import (
    PACKET_TYPES,
    PROTOCOL_5,
    PROTOCOL_31,
    PROTOCOL_311,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)
from ._primitives import MAX_VARINT, check_topic_filter, check_topic_name
from ._properties import SPECS as PROPERTY_SPECS
from ._properties import WILL, Kind, Property, PropertySpec, encode_properties
from ._properties import read_properties as decode_properties
from ._reasons import SUBACK_FAILURE, ConnAckCode, ReasonCode, connack_code_v3

__all__ = [
    "MAX_VARINT", "PACKET_TYPES", "PROPERTY_SPECS", "PROTOCOL_31", "PROTOCOL_311",
    "PROTOCOL_5", "SUBACK_FAILURE", "WILL", "Auth", "ConnAck", "ConnAckCode", "Connect",
    "Decoder", "Disconnect", "Kind", "LocalProtocolError", "MalformedPacket", "Packet",
    "PacketTooLarge", "PacketType", "PingReq", "PingResp", "Properties", "Property",
    "PropertySpec", "ProtocolError", "ProtocolViolation", "PubAck", "PubComp", "PubRec",
    "PubRel", "Publish", "ReasonCode", "RemoteProtocolError", "Role", "SubAck",
    "Subscribe", "Subscription", "UnsubAck", "Unsubscribe", "UnsupportedProtocolVersion",
    "Will", "check_topic_filter", "check_topic_name", "connack_code_v3", "decode_properties",
    "encode", "encode_properties", "frame_publish", "plain_ack", "publish_header",
    "publish_pieces",
]
