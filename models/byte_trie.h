/* A trie over byte strings for "the longest key that starts here" (the tokenizer's added
 * tokens): edges in one open-addressing hash keyed by (node, byte), so memory is linear in the
 * keys' total length and a lookup walks at most the longest key's length. */
#ifndef CVENE_BYTE_TRIE_H
#define CVENE_BYTE_TRIE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t *key;     /* (node << 8 | byte) + 1 per slot; 0 = empty */
    int32_t *child;    /* the edge's target node */
    size_t mask;       /* slots - 1 */
    int32_t *value;    /* per node: the value of the key ending there, or -1 */
    int32_t n_nodes, cap_nodes;
    size_t max_len;    /* longest key */
} byte_trie;

/* An empty trie with room for keys of total_len bytes in all; 0, or -1 when out of memory. */
int byte_trie_init(byte_trie *t, size_t total_len);
/* Add key s[0 .. n) (n >= 1) with value v >= 0; a key added twice keeps its first value.
 * The total length given to init must not be exceeded. */
void byte_trie_add(byte_trie *t, const uint8_t *s, size_t n, int32_t v);
/* The value of the longest key that is a prefix of s[0 .. n), its length in *len; -1 if none. */
int32_t byte_trie_longest(const byte_trie *t, const uint8_t *s, size_t n, size_t *len);
void byte_trie_free(byte_trie *t);

#endif
