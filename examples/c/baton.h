/* baton's guest helpers for C functions built with `clang --target=wasm32-wasi`.
 *
 * A function reads its whole payload from stdin and writes its result to stdout (WASI
 * preview 1). An output that starts with "@next NAME\n" continues the chain at NAME with
 * the rest as its payload. `baton_invoke` calls another function synchronously through the
 * host (the director runs it and returns its output).
 */
#ifndef BATON_H
#define BATON_H

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Host imports: invoke returns the result's length (or a negative error), and result copies
 * the result of the last invoke into buf (at most cap bytes), returning the bytes copied. */
__attribute__((import_module("baton"), import_name("invoke"))) int
baton_host_invoke(const char *name, int name_len, const char *payload, int payload_len);
__attribute__((import_module("baton"), import_name("result"))) int
baton_host_result(char *buf, int cap);

/* Reads all of stdin into a NUL-terminated buffer (caller frees); *len gets its length. */
static inline char *baton_read_input(size_t *len) {
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap + 1);
  if (!buf) return NULL;
  for (;;) {
    ssize_t got = read(0, buf + n, cap - n);
    if (got <= 0) break;
    n += (size_t)got;
    if (n == cap) {
      cap *= 2;
      char *bigger = realloc(buf, cap + 1);
      if (!bigger) { free(buf); return NULL; }
      buf = bigger;
    }
  }
  buf[n] = '\0';
  *len = n;
  return buf;
}

static inline void baton_write(const char *data, size_t len) {
  while (len > 0) {
    ssize_t put = write(1, data, len);
    if (put <= 0) return;
    data += put;
    len -= (size_t)put;
  }
}

static inline void baton_write_str(const char *text) { baton_write(text, strlen(text)); }

/* The integer after "\"key\":" in a flat JSON object, or `missing`. */
static inline long baton_json_int(const char *json, const char *key, long missing) {
  char pattern[64];
  snprintf(pattern, sizeof pattern, "\"%s\":", key);
  const char *at = strstr(json, pattern);
  if (!at) return missing;
  at += strlen(pattern);
  while (*at == ' ') at++;
  char *end;
  long value = strtol(at, &end, 10);
  return end == at ? missing : value;
}

/* Whether the flat JSON object has a non-empty string field `key`. */
static inline int baton_json_has_string(const char *json, const char *key) {
  char pattern[64];
  snprintf(pattern, sizeof pattern, "\"%s\":", key);
  const char *at = strstr(json, pattern);
  if (!at) return 0;
  at += strlen(pattern);
  while (*at == ' ') at++;
  return at[0] == '"' && at[1] != '"' && at[1] != '\0';
}

/* Writes "@next NAME\n" then `json` with `"status":"STATUS",` inserted after its '{'. */
static inline void baton_forward_with_status(const char *next, const char *json, const char *status) {
  baton_write_str("@next ");
  baton_write_str(next);
  baton_write_str("\n{\"status\":\"");
  baton_write_str(status);
  baton_write_str("\",");
  const char *body = strchr(json, '{');
  baton_write_str(body ? body + 1 : "}");
}

#endif
