// shape_routes.cpp: SimGrid's routes between the GPUs of identical nodes,
// found once per shape and given to SimGrid as bypass routes (shape_routes.h).
//
// Why the renamed route is SimGrid's own route. SimGrid 3.32's DijkstraZone
// makes each <route> an edge (both ways when symmetrical) whose cost is its
// number of links, numbers the vertices in the order the routes first name
// them, and searches from the source popping vertices by (cost, number),
// replacing a predecessor only on a strictly smaller cost: a vertex's
// predecessor is the first popped of its neighbours on a shortest path to
// it. sim/network/machine.c writes the rails and the spine first, then the
// routes of each node in the same order, node after node. Mapping reference
// node a' to a and b' to b (a vertex outside both nodes to itself) keeps
// every edge and its cost, the numbering order among the global vertices,
// within a node and between the two nodes when (a' < b') == (a < b); the
// shortest route between GPUs of two nodes never enters a third node (going
// through a node costs a NIC route in and one out, more than a rail's
// spine), and a tie on it never weighs a vertex of a third node against
// another (such a vertex is farther from the source than the rails). So the
// search from GPU i of node a reaches GPU j of node b by the image of the
// reference route. tests/test_shape_routes.c compares every pair of GPUs of
// h100-fattree on 4 nodes (and the same check sampled at 2048 nodes is in
// sim/plan/README.md); a route whose link the destination nodes lack falls
// back to SimGrid's search.
//
// SimGrid looks bypass routes up before the zone's routing (NetZoneImpl::
// get_global_route), by (source, destination) netpoint: a pair is bypassed
// once, before the first transfer or route query between its hosts.
#include <simgrid/kernel/routing/NetZoneImpl.hpp>
#include <simgrid/s4u/Engine.hpp>
#include <simgrid/s4u/Host.hpp>
#include <simgrid/s4u/Link.hpp>
#include <simgrid/s4u/NetZone.hpp>

#include <cstdint>
#include <cstdio>
#include <string>
#include <unordered_map>
#include <vector>

#include "shape_routes.h"

namespace {

using simgrid::s4u::Host;
using simgrid::s4u::Link;

// One link of a shape: of the source's node, of the destination's, or global.
enum Role { SRC_NODE, DST_NODE, GLOBAL };
struct ShapeLink {
    Role role;
    int id;        // the node link's name id (SRC_NODE, DST_NODE)
    Link *global;  // GLOBAL
};
struct Shape {
    bool ok = false;
    std::vector<ShapeLink> links;
};

struct Routes {
    bool on = false;
    int world = 0;
    simgrid::s4u::NetZone *zone = nullptr;
    std::vector<Host *> hosts;                // by rank
    std::vector<int> node, local;             // by rank
    std::unordered_map<std::string, int> ids; // a node link's name without "node<k>-"
    std::vector<std::vector<Link *>> node_links; // [node][id], nullptr where missing
    std::unordered_map<uint64_t, Shape> shapes;  // (GPU i, GPU j, relation)
    std::unordered_map<uint64_t, bool> done;     // (rank a, rank b): bypassed
};
Routes R;

// "node<k>-<rest>": k and where rest starts; -1 otherwise.
int node_of(const char *name, int *rest) {
    int k = -1, n = 0;
    if (std::sscanf(name, "node%d-%n", &k, &n) == 1 && n > 0 && k >= 0) {
        *rest = n;
        return k;
    }
    return -1;
}

int relation(int a, int b) { return R.node[a] == R.node[b] ? 0 : R.node[a] < R.node[b] ? 1 : 2; }

uint64_t shape_key(int a, int b) {
    return ((uint64_t)(uint32_t)R.local[a] << 34) | ((uint64_t)(uint32_t)R.local[b] << 2) | (uint64_t)relation(a, b);
}

// The reference route of the shape of (a, b), on nodes 0 and 1.
Shape make_shape(int a, int b) {
    Shape s;
    int rel = relation(a, b), na = rel == 2 ? 1 : 0, nb = rel == 1 ? 1 : 0;
    char from[64], to[64];
    std::snprintf(from, sizeof from, "node%d-gpu%d", na, R.local[a]);
    std::snprintf(to, sizeof to, "node%d-gpu%d", nb, R.local[b]);
    Host *ha = Host::by_name_or_null(from), *hb = Host::by_name_or_null(to);
    if (!ha || !hb || ha == hb) return s;
    std::vector<Link *> links;
    double lat = 0;
    ha->route_to(hb, links, &lat);
    if (links.empty()) return s;
    for (Link *l : links) {
        int rest = 0, k = node_of(l->get_cname(), &rest);
        if (k < 0) {
            s.links.push_back({GLOBAL, -1, l});
            continue;
        }
        if (k != na && k != nb) return s; // through a third node: not a shape
        auto it = R.ids.find(l->get_cname() + rest);
        if (it == R.ids.end()) return s;
        s.links.push_back({k == na ? SRC_NODE : DST_NODE, it->second, nullptr});
    }
    s.ok = true;
    return s;
}

// The links of the shape on a's and b's nodes; false where a node lacks one.
bool materialize(const Shape &s, int a, int b, std::vector<Link *> &out) {
    out.clear();
    for (const ShapeLink &l : s.links) {
        if (l.role == GLOBAL) {
            out.push_back(l.global);
            continue;
        }
        const std::vector<Link *> &row = R.node_links[R.node[l.role == SRC_NODE ? a : b]];
        Link *x = l.id < (int)row.size() ? row[l.id] : nullptr;
        if (!x) return false;
        out.push_back(x);
    }
    return true;
}

const Shape &shape_of(int a, int b) {
    uint64_t key = shape_key(a, b);
    auto it = R.shapes.find(key);
    if (it == R.shapes.end()) it = R.shapes.emplace(key, make_shape(a, b)).first;
    return it->second;
}

// The argument above holds for platforms written by machine.c; a file of the
// same names written otherwise (an edited preset: a link between two nodes)
// may route differently. Before any bypass route is made, the routes from
// the GPUs of the last node and of the middle one (neither a reference node
// past 3 nodes) to every rank are compared: SimGrid's own search against the
// shape. Any difference turns the shapes off for the whole platform. Cost:
// one search per sampled GPU (SimGrid searches per source) and
// 2 x GPUs-per-node x world route look-ups.
bool sample_agrees(int nodes) {
    simgrid::s4u::Engine::get_instance()->seal_platform(); // the zones' searches are set up when sealed
    std::vector<Link *> own, shaped;
    for (int a = 0; a < R.world; a++) {
        if (R.node[a] != nodes - 1 && R.node[a] != nodes / 2) continue;
        for (int b = 0; b < R.world; b++) {
            if (R.hosts[a] == R.hosts[b]) continue;
            const Shape &s = shape_of(a, b);
            if (!s.ok || !materialize(s, a, b, shaped)) continue; // SimGrid's search routes it anyway
            own.clear();
            double lat = 0;
            R.hosts[a]->route_to(R.hosts[b], own, &lat);
            if (own != shaped) return false;
        }
    }
    return true;
}

} // namespace

extern "C" int sim_shape_routes_init(sg_host_t *hosts, int world) {
    R = Routes();
    if (world < 2) return 0;
    auto *engine = simgrid::s4u::Engine::get_instance();
    R.zone = engine->get_netzone_root();
    if (!R.zone || !R.zone->get_children().empty()) return 0; // one flat zone only
    R.world = world;
    R.hosts.assign(hosts, hosts + world);
    R.node.resize(world);
    R.local.resize(world);
    int nodes = 0;
    for (int k = 0; k < world; k++) {
        int node = -1, gpu = -1, end = 0;
        const char *name = hosts[k]->get_cname();
        if (std::sscanf(name, "node%d-gpu%d%n", &node, &gpu, &end) != 2 || name[end] || node < 0 || gpu < 0 ||
            hosts[k]->get_englobing_zone() != R.zone)
            return 0;
        R.node[k] = node;
        R.local[k] = gpu;
        if (node + 1 > nodes) nodes = node + 1;
    }
    if (nodes < 2) return 0;
    R.node_links.assign(nodes, {});
    for (Link *l : engine->get_all_links()) {
        int rest = 0, k = node_of(l->get_cname(), &rest);
        if (k < 0 || k >= nodes) continue;
        auto id = R.ids.emplace(l->get_cname() + rest, (int)R.ids.size()).first->second;
        std::vector<Link *> &row = R.node_links[k];
        if ((int)row.size() <= id) row.resize(id + 1, nullptr);
        row[id] = l;
    }
    R.on = true;
    if (!sample_agrees(nodes)) {
        R = Routes();
        return 0;
    }
    return 1;
}

extern "C" int sim_shape_routes_prepare(int a, int b) {
    if (!R.on || a == b || a < 0 || b < 0 || a >= R.world || b >= R.world || R.hosts[a] == R.hosts[b]) return 0;
    // emplace, not C++17's try_emplace: tools/check's fuzzing build compiles this with clang++'s default
    auto ins = R.done.emplace((uint64_t)a * (uint64_t)R.world + (uint64_t)b, false);
    auto it = ins.first;
    if (!ins.second) return it->second;
    const Shape &s = shape_of(a, b);
    std::vector<Link *> links;
    if (!s.ok || !materialize(s, a, b, links)) return 0; // SimGrid's own search for this pair
    std::vector<simgrid::s4u::LinkInRoute> route;
    route.reserve(links.size());
    for (Link *l : links) route.emplace_back(l);
    R.zone->add_bypass_route(R.hosts[a]->get_netpoint(), R.hosts[b]->get_netpoint(), nullptr, nullptr, route);
    it->second = true;
    return 1;
}

extern "C" long sim_shape_routes_verify(int stride, long *bypassed, long *bad, char *why, int n) {
    *bad = *bypassed = 0;
    if (n > 0) why[0] = '\0';
    if (!R.on || stride < 1) return 0;
    simgrid::s4u::Engine::get_instance()->seal_platform(); // the zones' searches are set up when sealed
    struct Pair {
        int a, b;
        std::vector<Link *> links;
    };
    std::vector<Pair> pairs;
    for (int a = 0; a < R.world; a += stride)
        for (int b = 0; b < R.world; b++) {
            if (R.hosts[a] == R.hosts[b]) continue;
            Pair p{a, b, {}};
            double lat = 0;
            R.hosts[a]->route_to(R.hosts[b], p.links, &lat); // SimGrid's search: no bypass yet
            pairs.push_back(std::move(p));
        }
    for (const Pair &p : pairs) *bypassed += sim_shape_routes_prepare(p.a, p.b);
    for (const Pair &p : pairs) {
        std::vector<Link *> got;
        double lat = 0;
        R.hosts[p.a]->route_to(R.hosts[p.b], got, &lat);
        if (got != p.links) {
            if (*bad == 0 && n > 0)
                std::snprintf(why, n, "%s to %s: %zu links by SimGrid's search, %zu by the shape",
                              R.hosts[p.a]->get_cname(), R.hosts[p.b]->get_cname(), p.links.size(), got.size());
            (*bad)++;
        }
    }
    return (long)pairs.size();
}
