/* plan_model.c: model descriptions (sim/models/<name>.json, also compiled in). */
#define _POSIX_C_SOURCE 200809L
#include "plan_internal.h"

#include <string.h>
#include "usp/json.h"

const char *const *usp_model_names(void) {
    static const char *names[32];
    for (int i = 0; i < PLAN_NEMBEDDED_MODELS && i < 31; i++) names[i] = PLAN_EMBEDDED_MODELS[i].name;
    return names;
}

static const char *embedded(const char *name) {
    for (int i = 0; i < PLAN_NEMBEDDED_MODELS; i++)
        if (strcmp(PLAN_EMBEDDED_MODELS[i].name, name) == 0) return PLAN_EMBEDDED_MODELS[i].json;
    return NULL;
}

static usp_status positive_int(const usp_json *root, const char *key, int *out) {
    USP_TRY(usp_json_get_int(root, key, out));
    if (*out < 1) return usp_fail(USP_EINVAL, "line %d: '%s' must be >= 1", usp_json_get(root, key)->line, key);
    return USP_OK;
}

/* "mlp": "swiglu" | "gelu", absent: swiglu. */
static usp_status load_mlp(const usp_json *root, usp_model *m) {
    m->gated_mlp = 1;
    if (!usp_json_get(root, "mlp")) return USP_OK;
    const char *mlp;
    USP_TRY(usp_json_get_string(root, "mlp", &mlp));
    if (strcmp(mlp, "swiglu") == 0) return USP_OK;
    if (strcmp(mlp, "gelu") == 0) { m->gated_mlp = 0; return USP_OK; }
    return usp_fail(USP_EINVAL, "line %d: 'mlp' is \"%s\", not \"swiglu\" or \"gelu\"",
                    usp_json_get(root, "mlp")->line, mlp);
}

static usp_status load_tree(const usp_json *root, usp_model *m) {
    const char *name;
    if (root->type != USP_JSON_OBJECT) return usp_fail(USP_EINVAL, "line %d: a model is a JSON object", root->line);
    USP_TRY(usp_json_get_string(root, "name", &name));
    snprintf(m->name, sizeof m->name, "%s", name);
    USP_TRY(positive_int(root, "layers", &m->layers));
    USP_TRY(positive_int(root, "hidden", &m->hidden));
    USP_TRY(positive_int(root, "heads", &m->heads));
    USP_TRY(positive_int(root, "kv_heads", &m->kv_heads));
    USP_TRY(positive_int(root, "ffn", &m->ffn));
    USP_TRY(positive_int(root, "vocab", &m->vocab));
    m->head_dim = m->hidden / m->heads;
    if (usp_json_get(root, "head_dim")) USP_TRY(positive_int(root, "head_dim", &m->head_dim));
    if (usp_json_get(root, "tied_embeddings")) USP_TRY(usp_json_get_bool(root, "tied_embeddings", &m->tied_embeddings));
    return load_mlp(root, m);
}

usp_status usp_model_validate(const usp_model *m) {
    if (m->layers < 1 || m->hidden < 1 || m->heads < 1 || m->kv_heads < 1 || m->ffn < 1 || m->vocab < 1)
        return usp_fail(USP_EINVAL, "model %s: layers, hidden, heads, kv_heads, ffn and vocab must be >= 1", m->name);
    if (m->heads % m->kv_heads != 0)
        return usp_fail(USP_EINVAL, "model %s: heads %d are not divisible by kv_heads %d", m->name, m->heads,
                        m->kv_heads);
    if (m->head_dim < 1 || m->head_dim > 256)
        return usp_fail(USP_EINVAL, "model %s: head_dim %d is outside 1..256 (the attention kernels' range)",
                        m->name, m->head_dim);
    return USP_OK;
}

usp_status usp_model_load(const char *name_or_file, usp_model *m) {
    memset(m, 0, sizeof *m);
    const char *text = embedded(name_or_file);
    if (!text && !strchr(name_or_file, '/') && !strstr(name_or_file, ".json")) {
        char list[256] = "";
        for (int i = 0; i < PLAN_NEMBEDDED_MODELS; i++) {
            if (i) strncat(list, ", ", sizeof list - strlen(list) - 1);
            strncat(list, PLAN_EMBEDDED_MODELS[i].name, sizeof list - strlen(list) - 1);
        }
        return usp_fail(USP_EINVAL, "unknown model '%s' (built in: %s; or a .json file)", name_or_file, list);
    }
    usp_json *root = NULL;
    usp_status st = text ? usp_json_parse(text, strlen(text), &root) : usp_json_parse_file(name_or_file, &root);
    if (st == USP_OK) st = load_tree(root, m);
    usp_json_free(root);
    if (st == USP_OK) st = usp_model_validate(m);
    if (st != USP_OK) usp_error_prefix("model %s: ", name_or_file);
    return st;
}

/* Query, key, value and output projections, the MLP matrices, two norms. */
double usp_model_layer_params(const usp_model *m) {
    double h = m->hidden, D = m->head_dim;
    double attn = h * (m->heads + 2.0 * m->kv_heads) * D + m->heads * D * h;
    double mlp = (m->gated_mlp ? 3.0 : 2.0) * h * m->ffn;
    return attn + mlp + 2 * h;
}

double usp_model_params(const usp_model *m) {
    double embed = (double)m->vocab * m->hidden * (m->tied_embeddings ? 1 : 2);
    return m->layers * usp_model_layer_params(m) + embed + m->hidden;
}
