#include <stdlib.h>
#include <string.h>

#include "models/byte_trie.h"

static size_t slot_of(const byte_trie *t, uint64_t key) {
    uint64_t h = key * 0x9E3779B97F4A7C15ull; /* Fibonacci hashing spreads (node, byte) pairs */
    return (size_t)(h >> 17) & t->mask;
}

int byte_trie_init(byte_trie *t, size_t total_len) {
    memset(t, 0, sizeof *t);
    size_t slots = 16;
    while (slots < 2 * total_len + 2) slots *= 2; /* load factor <= 1/2 */
    t->key = calloc(slots, sizeof *t->key);
    t->child = malloc(slots * sizeof *t->child);
    t->cap_nodes = (int32_t)(total_len + 1);
    t->value = malloc((size_t)t->cap_nodes * sizeof *t->value);
    if (!t->key || !t->child || !t->value) {
        byte_trie_free(t);
        return -1;
    }
    t->mask = slots - 1;
    t->n_nodes = 1; /* the root */
    t->value[0] = -1;
    return 0;
}

void byte_trie_add(byte_trie *t, const uint8_t *s, size_t n, int32_t v) {
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        const uint64_t key = (((uint64_t)node << 8) | s[i]) + 1;
        size_t k = slot_of(t, key);
        while (t->key[k] && t->key[k] != key) k = (k + 1) & t->mask;
        if (!t->key[k]) { /* a new edge to a new node */
            t->key[k] = key;
            t->child[k] = t->n_nodes;
            t->value[t->n_nodes++] = -1;
        }
        node = t->child[k];
    }
    if (t->value[node] < 0) t->value[node] = v;
    if (n > t->max_len) t->max_len = n;
}

int32_t byte_trie_longest(const byte_trie *t, const uint8_t *s, size_t n, size_t *len) {
    int32_t node = 0, best = -1;
    *len = 0;
    for (size_t i = 0; i < n && t->key; i++) {
        const uint64_t key = (((uint64_t)node << 8) | s[i]) + 1;
        size_t k = slot_of(t, key);
        while (t->key[k] && t->key[k] != key) k = (k + 1) & t->mask;
        if (!t->key[k]) break;
        node = t->child[k];
        if (t->value[node] >= 0) best = t->value[node], *len = i + 1;
    }
    return best;
}

void byte_trie_free(byte_trie *t) {
    free(t->key);
    free(t->child);
    free(t->value);
    memset(t, 0, sizeof *t);
}
