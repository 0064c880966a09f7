// plan_sendto.cpp: transfers between a running rank and a host no actor of
// the program runs on, for the planner's representative simulation
// (plan_sim.c); plan_sendto.h says why there are two ways.
//
// plan_sendto_async(from, to, bytes) starts the transfer of `bytes` over the
// route from `from` to `to` and returns it as an sg_comm_t holding one
// reference, as sg_mailbox_put_async does: sg_comm_wait waits for it and
// releases that reference.
//
// plan_peer_flows: a helper actor on the peer's host, daemonized (the
// simulation ends without it), waits on its semaphore for a request, posts
// its end of each flow (the send of the inbound flow, the receive of the
// outbound one) on mailboxes of its own, waits for both and goes back to
// its host's pool. The caller posts the other ends at the same instant, so
// each transfer starts when it is asked for, from the sender's host to the
// receiver's, as the host-to-host transfer does.
#include <simgrid/s4u/Actor.hpp>
#include <simgrid/s4u/Comm.hpp>
#include <simgrid/s4u/Host.hpp>
#include <simgrid/s4u/Mailbox.hpp>
#include <simgrid/s4u/Semaphore.hpp>

#include <string>
#include <unordered_map>
#include <vector>

#include "plan_sendto.h"

extern "C" sg_comm_t plan_sendto_async(sg_host_t from, sg_host_t to, double bytes) {
    simgrid::s4u::CommPtr comm = simgrid::s4u::Comm::sendto_async(from, to, static_cast<uint64_t>(bytes + 0.5));
    comm->add_ref();
    return comm.get();
}

namespace {

using simgrid::s4u::CommPtr;
using simgrid::s4u::Host;
using simgrid::s4u::Mailbox;

// A helper's stack, in KiB: it only waits (SimGrid runs the simcalls on its
// own stack).
constexpr unsigned HELPER_STACK_KIB = 64;

struct Helper {
    Host *host = nullptr;
    simgrid::s4u::SemaphorePtr wake;
    Mailbox *to_peer = nullptr;   // the outbound flow: the caller sends, the helper receives
    Mailbox *from_peer = nullptr; // the inbound flow: the helper sends, the caller receives
    long out = -1, in = -1;       // the request
};

struct Pools {
    std::vector<Helper *> all;
    std::unordered_map<Host *, std::vector<Helper *>> idle;
};
Pools P;

int payload; // what a message carries: nothing anyone reads
void *sink;  // where a receive puts it

void helper_main(Helper *h) {
    simgrid::s4u::Actor::self()->daemonize();
    for (;;) {
        h->wake->acquire();
        CommPtr send, recv;
        if (h->in >= 0) send = h->from_peer->put_async(&payload, static_cast<uint64_t>(h->in));
        if (h->out >= 0) recv = h->to_peer->get_async<void>(&sink);
        if (send) send->wait();
        if (recv) recv->wait();
        P.idle[h->host].push_back(h);
    }
}

Helper *take(Host *host) {
    std::vector<Helper *> &pool = P.idle[host];
    if (!pool.empty()) {
        Helper *h = pool.back();
        pool.pop_back();
        return h;
    }
    if (P.all.size() >= PLAN_PEER_HELPERS_MAX) return nullptr;
    // Named and counted before any call into SimGrid: a call may let other
    // actors run, and take a helper too.
    auto *h = new Helper;
    std::string name = "peer" + std::to_string(P.all.size());
    P.all.push_back(h);
    h->host = host;
    h->wake = simgrid::s4u::Semaphore::create(0);
    h->to_peer = Mailbox::by_name(name + "<");
    h->from_peer = Mailbox::by_name(name + ">");
    simgrid::s4u::Actor::init(name, host)->set_stacksize(HELPER_STACK_KIB)->start([h] { helper_main(h); });
    return h;
}

sg_comm_t keep(CommPtr c) {
    c->add_ref();
    return c.get();
}

} // namespace

extern "C" int plan_peer_flows(sg_host_t peer, long out_bytes, long in_bytes, sg_comm_t *comms) {
    if (out_bytes < 0 && in_bytes < 0) return 0;
    Helper *h = take(peer);
    if (!h) return -1;
    h->out = out_bytes;
    h->in = in_bytes;
    h->wake->release();
    int n = 0;
    if (out_bytes >= 0) comms[n++] = keep(h->to_peer->put_async(&payload, static_cast<uint64_t>(out_bytes)));
    if (in_bytes >= 0) comms[n++] = keep(h->from_peer->get_async<void>(&sink));
    return n;
}
