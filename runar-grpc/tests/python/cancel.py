"""Starts a long Sleep call through the gateway, waits for a line on stdin, cancels the call and
prints `cancelled`. Usage: cancel.py ADDRESS."""

import sys

import grpc

import greeter_pb2
import greeter_pb2_grpc


def main():
    channel = grpc.insecure_channel(sys.argv[1])
    stub = greeter_pb2_grpc.GreeterStub(channel)
    call = stub.Sleep.future(greeter_pb2.SleepRequest(millis=60_000), timeout=60)
    sys.stdin.readline()
    call.cancel()
    print("cancelled" if call.cancelled() else "not cancelled", flush=True)


if __name__ == "__main__":
    main()
