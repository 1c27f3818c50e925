"""Starts a long Sleep call and a long Count stream (reading its first reply) through the
gateway, waits for a line on stdin, cancels both and prints `cancelled`. Usage: cancel.py
ADDRESS."""

import sys

import grpc

import greeter_pb2
import greeter_pb2_grpc


def main():
    channel = grpc.insecure_channel(sys.argv[1])
    stub = greeter_pb2_grpc.GreeterStub(channel)
    call = stub.Sleep.future(greeter_pb2.SleepRequest(millis=60_000), timeout=60)
    stream = stub.Count(greeter_pb2.CountRequest(name="ada", count=1_000_000, every_millis=10))
    first = next(stream)
    sys.stdin.readline()
    call.cancel()
    stream.cancel()
    both = call.cancelled() and first.message == "hello ada 1"
    print("cancelled" if both else "not cancelled", flush=True)


if __name__ == "__main__":
    main()
