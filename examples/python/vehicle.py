#!/usr/bin/env python3
"""A reference vehicle for rpi-client's vehicle bridge (docs/vehicle-bridge.md).

Standard library only. It connects to the bridge socket, claims its entities and drives them
along the segments it gets, with the motion of rpi-client's built-in simulator: straight lines
(segment_type 0), the speed ramping linearly with distance from velocity_start to velocity_end
but never below 10 mm/s, a jump to the segment's start when the entity is elsewhere, a first-in
first-out queue. It answers every segment (accepted, then completed; or rejected with a
protocol reason), executes stop/pause/resume/cancel, and sends every entity's state every 100 ms
while driving (the daemon's default state_interval) and every 200 ms when idle, all of a
round in one write (the daemon's reader wakes once for them). It exits (status 1) when the daemon closes the
connection: a real vehicle halts then, and systemd restarts the process.

    python3 examples/python/vehicle.py --socket /run/rpi-client/vehicle.sock --entities 1,2
"""

import argparse
import collections
import math
import select
import socket
import struct
import sys
import time

# Bridge messages (docs/vehicle-bridge.md).
BRIDGE_VERSION = 1
HELLO = 0xB1
HELLO_ACK = 0xB2
CAP_PAUSE = 0x01
CAP_CANCEL = 0x02
HELLO_RESULTS = {
    0: "ok",
    1: "entity already driven by another vehicle process",
    2: "entity unknown to this rpi-client",
    3: "bad hello",
    4: "too many vehicle connections",
}
# Version 3 wire messages (docs/protocol.md): header = 0x30 | kind.
STATE = 0x32
SEGMENT = 0x33
ACK = 0x34
ACTION = 0x36
SEGMENT_FMT = "<BIIiiiiiiBQI"  # 46 bytes
ACTION_FMT = "<BIIIBBI"  # 19 bytes
STATE_FMT = "<BIQiiiiiIHB"  # 40 bytes
ACK_FMT = "<BIIBB"  # 11 bytes
# Ack outcomes and reject reasons.
ACCEPTED, COMPLETED, REJECTED = 0, 1, 2
UNSUPPORTED_TYPE, INVALID_SEGMENT, QUEUE_FULL = 2, 3, 4
# Actions.
STOP, PAUSE, RESUME, CANCEL = 1, 2, 3, 4

MIN_SPEED = 10.0  # mm/s, as the built-in simulator
STEP = 0.02  # s between motion steps
STATE_DRIVING = 0.1  # s between state frames while driving (the daemon's default state_interval)
STATE_IDLE = 0.2  # s between state frames when idle (the daemon's bridge_timeout is >= 100 ms)


def rust_round(v):
    """Rounds half away from zero, as Rust's f64::round."""
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def heading_mdeg(dx, dy):
    return rust_round(math.degrees(math.atan2(dy, dx)) * 1000.0) % 360000


class Run:
    """A segment being driven."""

    def __init__(self, seg):
        self.id = seg["segment_id"]
        self.start = (float(seg["sx"]), float(seg["sy"]))
        self.end = (float(seg["ex"]), float(seg["ey"]))
        dx, dy = self.end[0] - self.start[0], self.end[1] - self.start[1]
        self.len = math.hypot(dx, dy)
        self.dir = (dx / self.len, dy / self.len) if self.len > 0 else (1.0, 0.0)
        self.done = 0.0
        self.v0 = float(seg["v0"])
        self.v1 = float(seg["v1"])

    def speed_at(self, d):
        frac = min(max(d / self.len, 0.0), 1.0) if self.len > 0 else 1.0
        return max(self.v0 + (self.v1 - self.v0) * frac, MIN_SPEED)


class Entity:
    """One vehicle: the built-in simulator's motion (rpi-mqtt-client/src/simulator.rs)."""

    def __init__(self, entity_id, x, y, depth):
        self.id = entity_id
        self.x, self.y = float(x), float(y)
        self.angle = 0
        self.speed = 0.0
        self.run = None
        self.queue = collections.deque()
        self.depth = depth
        self.paused = False

    def idle(self):
        return self.run is None and not self.queue

    def begin(self, seg):
        run = Run(seg)
        self.x, self.y = run.start
        if run.len > 0:
            self.angle = heading_mdeg(*run.dir)
        self.speed = run.speed_at(0.0)
        self.run = run

    def accept(self, seg):
        """None when taken, else a reject reason."""
        if seg["type"] != 0:
            return UNSUPPORTED_TYPE
        v0, v1 = seg["v0"], seg["v1"]
        if v0 < 0 or v1 < 0 or (v0 == 0 and v1 == 0):
            return INVALID_SEGMENT
        if self.idle():
            self.begin(seg)
            return None
        if len(self.queue) >= self.depth:
            return QUEUE_FULL
        self.queue.append(seg)
        return None

    def step(self, dt):
        """Advances by dt seconds; returns the id of a segment completed, else None."""
        if self.paused:
            return None
        if self.run is None:
            if not self.queue:
                self.speed = 0.0
                return None
            self.begin(self.queue.popleft())
        run = self.run
        v = run.speed_at(run.done)
        mid = run.speed_at(run.done + v * dt / 2.0)
        nxt = run.done + mid * dt
        if nxt >= run.len:
            self.x, self.y = run.end
            self.speed = 0.0
            self.run = None
            return run.id
        run.done = nxt
        self.x = run.start[0] + run.dir[0] * nxt
        self.y = run.start[1] + run.dir[1] * nxt
        self.speed = run.speed_at(nxt)
        return None

    def state(self):
        """(x, y, angle, vx, vy, segment_id, progress) in wire units."""
        if self.run is None:
            vx = vy = seg = progress = 0
        else:
            run = self.run
            speed = 0.0 if self.paused else self.speed
            vx = rust_round(speed * run.dir[0])
            vy = rust_round(speed * run.dir[1])
            seg = run.id
            progress = (
                min(max(math.floor(run.done / run.len * 10000.0), 0), 10000)
                if run.len > 0
                else 0
            )
        return (rust_round(self.x), rust_round(self.y), self.angle, vx, vy, seg, progress)

    def stop(self):
        self.run = None
        self.queue.clear()
        self.speed = 0.0

    def cancel(self, segment_id):
        if segment_id == 0:
            self.queue.clear()
        elif self.run is not None and self.run.id == segment_id:
            self.run = None
            self.speed = 0.0
        else:
            self.queue = collections.deque(
                s for s in self.queue if s["segment_id"] != segment_id
            )


def frame(payload):
    return struct.pack("<H", len(payload)) + payload


class Connection:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""
        self.out = []

    def send(self, payload):
        """Queues a frame; flush() writes what is queued at once."""
        self.out.append(frame(payload))

    def flush(self):
        """One write for every frame queued: the daemon's reader wakes once for all of
        them (a Pi's CPU and wake-ups are counted)."""
        if self.out:
            self.sock.sendall(b"".join(self.out))
            self.out = []

    def frames(self):
        """Whole payloads received so far (reads what is available)."""
        data = self.sock.recv(4096)
        if not data:
            raise ConnectionError("the daemon closed the connection")
        self.buf += data
        out = []
        while len(self.buf) >= 2:
            (n,) = struct.unpack_from("<H", self.buf)
            if len(self.buf) < 2 + n:
                break
            out.append(self.buf[2 : 2 + n])
            self.buf = self.buf[2 + n :]
        return out


def now_ms():
    return int(time.time() * 1000)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--socket", default="/run/rpi-client/vehicle.sock")
    p.add_argument("--entities", required=True, help="entity ids, e.g. 1,2")
    p.add_argument("--queue-depth", type=int, default=8)
    p.add_argument(
        "--origin",
        default="0,0",
        help="x,y in mm where entity i of the list starts at (x + i * 1000, y), like "
        "rpi-client's sim_origin",
    )
    args = p.parse_args()
    ids = [int(e) for e in args.entities.split(",") if e.strip()]
    try:
        ox, oy = (int(v) for v in args.origin.split(","))
    except ValueError:
        p.error("--origin: x,y in mm, e.g. 0,5000")
    fleet = {
        e: Entity(e, ox + i * 1000, oy, args.queue_depth) for i, e in enumerate(ids)
    }

    conn = Connection(args.socket)
    hello = struct.pack("<BBBB", HELLO, BRIDGE_VERSION, CAP_PAUSE | CAP_CANCEL, len(ids))
    hello += b"".join(struct.pack("<I", e) for e in ids)
    conn.send(hello)
    conn.flush()
    answered = False
    while not answered:
        for payload in conn.frames():
            if payload[0] != HELLO_ACK or len(payload) != 7:
                sys.exit("vehicle: expected a HelloAck, got %s" % payload.hex())
            _, _, result, entity = struct.unpack("<BBBI", payload)
            if result != 0:
                what = HELLO_RESULTS.get(result, "result %d" % result)
                sys.exit("vehicle: refused: %s (entity %d)" % (what, entity))
            answered = True
    print("vehicle: driving entities %s" % ids, flush=True)

    def ack(entity_id, segment_id, outcome, reason=0):
        conn.send(struct.pack(ACK_FMT, ACK, entity_id, segment_id, outcome, reason))

    def send_state(e):
        x, y, angle, vx, vy, seg, progress = e.state()
        conn.send(
            struct.pack(STATE_FMT, STATE, e.id, now_ms(), x, y, angle, vx, vy, seg, progress, 0)
        )

    last_step = time.monotonic()
    # Every entity's state in one round, so one write carries them all.
    last_round = last_step
    for e in fleet.values():
        send_state(e)
    conn.flush()
    try:
        while True:
            timeout = max(0.0, last_step + STEP - time.monotonic())
            readable, _, _ = select.select([conn.sock], [], [], timeout)
            if readable:
                for payload in conn.frames():
                    kind = payload[0]
                    if kind == SEGMENT and len(payload) == 46:
                        f = struct.unpack(SEGMENT_FMT, payload)
                        seg = dict(
                            entity_id=f[1], segment_id=f[2], sx=f[3], sy=f[4], ex=f[5],
                            ey=f[6], v0=f[7], v1=f[8], type=f[9],
                        )
                        e = fleet.get(seg["entity_id"])
                        if e is None:
                            continue
                        reason = e.accept(seg)
                        if reason is None:
                            ack(e.id, seg["segment_id"], ACCEPTED)
                        else:
                            ack(e.id, seg["segment_id"], REJECTED, reason)
                        send_state(e)
                    elif kind == ACTION and len(payload) == 19:
                        _, _, _, entity_id, _, action, segment_id = struct.unpack(
                            ACTION_FMT, payload
                        )
                        e = fleet.get(entity_id)
                        if e is None:
                            continue
                        # The daemon has answered the action and acked the dropped segments.
                        if action == STOP:
                            e.stop()
                        elif action == PAUSE:
                            e.paused = True
                        elif action == RESUME:
                            e.paused = False
                        elif action == CANCEL:
                            e.cancel(segment_id)
                        send_state(e)
            t = time.monotonic()
            if t - last_step >= STEP:
                dt = min(t - last_step, 1.0)
                last_step = t
                for e in fleet.values():
                    done = e.step(dt)
                    if done is not None:
                        ack(e.id, done, COMPLETED)
                        send_state(e)
                driving = any(not (e.idle() or e.paused) for e in fleet.values())
                if t - last_round >= (STATE_DRIVING if driving else STATE_IDLE):
                    last_round = t
                    for e in fleet.values():
                        send_state(e)
            conn.flush()
    except (ConnectionError, OSError) as err:
        print("vehicle: connection lost: %s" % err, file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
