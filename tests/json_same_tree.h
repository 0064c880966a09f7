/* json_same_tree.h: whether the JSON reader's tree (usp/json.h) and
 * jansson's are the same: types, numbers (both read with strtod), strings,
 * key order. Shared by test_json.c and fuzz/fuzz_json.c. */
#ifndef USP_JSON_SAME_TREE_H
#define USP_JSON_SAME_TREE_H

#include <jansson.h>
#include <string.h>
#include "usp/json.h"

static int same_tree(const usp_json *u, const json_t *j) {
    switch (u->type) {
    case USP_JSON_NULL: return json_is_null(j);
    case USP_JSON_BOOL: return json_is_boolean(j) && u->boolean == json_is_true(j);
    case USP_JSON_NUMBER: return json_is_number(j) && u->number == json_number_value(j);
    case USP_JSON_STRING: return json_is_string(j) && strcmp(u->string, json_string_value(j)) == 0;
    case USP_JSON_ARRAY:
        if (!json_is_array(j) || json_array_size(j) != u->count) return 0;
        for (size_t i = 0; i < u->count; i++)
            if (!same_tree(&u->items[i], json_array_get(j, i))) return 0;
        return 1;
    case USP_JSON_OBJECT: {
        if (!json_is_object(j) || json_object_size(j) != u->count) return 0;
        size_t i = 0;
        const char *key;
        json_t *value;
        json_object_foreach((json_t *)j, key, value) {
            if (strcmp(key, u->keys[i]) != 0 || !same_tree(&u->items[i], value)) return 0;
            i++;
        }
        return 1;
    }
    }
    return 0;
}

#endif
