/* Geneve (RFC 8926) on the wire, for the eBPF encapsulation and
 * decapsulation: these kernels have no geneve module. */
#pragma once

#include "common.h"

#define ETH_P_TEB_ 0x6558 /* Transparent Ethernet Bridging */

struct genevehdr {
	__u8 ver_optlen; /* version (2 bits), options length in 4-byte words (6) */
	__u8 flags;      /* O, C, reserved */
	__be16 proto;
	__u8 vni[3];
	__u8 reserved;
};

/* The outer headers the encapsulation writes after the outer Ethernet
 * header: their size is the overlay's overhead on an IPv4 underlay (50). */
struct geneve_encap {
	struct iphdr ip;
	struct udphdr udp;
	struct genevehdr gnv;
	struct ethhdr inner;
} __attribute__((packed));

#define GENEVE_ENCAP_LEN ((int)sizeof(struct geneve_encap))
