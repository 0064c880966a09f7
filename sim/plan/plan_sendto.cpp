// plan_sendto.cpp: a host-to-host transfer started without a receiving actor,
// for the planner's representative simulation (plan_sim.c), which SimGrid's C
// API offers only as a blocking call (sg_host_sendto).
//
// plan_sendto_async(from, to, bytes) starts the transfer of `bytes` over the
// route from `from` to `to` and returns it as an sg_comm_t holding one
// reference, as sg_mailbox_put_async does: sg_comm_wait waits for it and
// releases that reference.
#include <simgrid/s4u/Comm.hpp>
#include <simgrid/s4u/Host.hpp>

#include "plan_sendto.h"

extern "C" sg_comm_t plan_sendto_async(sg_host_t from, sg_host_t to, double bytes) {
    simgrid::s4u::CommPtr comm = simgrid::s4u::Comm::sendto_async(from, to, static_cast<uint64_t>(bytes + 0.5));
    comm->add_ref();
    return comm.get();
}
