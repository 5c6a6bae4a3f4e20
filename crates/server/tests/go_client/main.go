// A gRPC client written with grpc-go, as relab's rkvctl was, for the interop test
// (crates/server/tests/go_interop.rs): it calls rkvpb.RKV on rkvd over grpc-go's own
// HTTP/2 transport (HPACK with its dynamic table and Huffman coding, BDP pings, window
// updates), so rkvd's transport is checked against the kind of client the original used.
//
// The messages are encoded by hand (rkvpb's field numbers) and sent through a codec
// that passes bytes through, so the program needs no generated code, only Debian's
// golang-google-grpc-dev.
//
// Usage: go_client LEADER_ADDRESS FOLLOWER_ADDRESS; prints "ok" and exits 0 when every
// check passes, else says what failed and exits 1.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func varint(out []byte, v uint64) []byte {
	for v >= 0x80 {
		out = append(out, byte(v)|0x80)
		v >>= 7
	}
	return append(out, byte(v))
}

func uintField(out []byte, field int, v uint64) []byte {
	return varint(append(out, byte(field<<3)), v)
}

func stringField(out []byte, field int, s string) []byte {
	out = varint(append(out, byte(field<<3|2)), uint64(len(s)))
	return append(out, s...)
}

// field returns the first value of field number `want` in a message: a varint or the
// bytes of a length-delimited field.
func field(msg []byte, want int) (uint64, []byte, bool) {
	for len(msg) > 0 {
		key, n := readVarint(msg)
		if n == 0 {
			return 0, nil, false
		}
		msg = msg[n:]
		number, wire := int(key>>3), key&7
		switch wire {
		case 0:
			v, n := readVarint(msg)
			if n == 0 {
				return 0, nil, false
			}
			msg = msg[n:]
			if number == want {
				return v, nil, true
			}
		case 2:
			l, n := readVarint(msg)
			if n == 0 || uint64(len(msg)-n) < l {
				return 0, nil, false
			}
			data := msg[n : n+int(l)]
			msg = msg[n+int(l):]
			if number == want {
				return 0, data, true
			}
		default:
			return 0, nil, false
		}
	}
	return 0, nil, false
}

func readVarint(b []byte) (uint64, int) {
	var v uint64
	for i := 0; i < len(b) && i < 10; i++ {
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i] < 0x80 {
			return v, i + 1
		}
	}
	return 0, 0
}

func call(conn *grpc.ClientConn, method string, request []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var response []byte
	err := conn.Invoke(ctx, "/rkvpb.RKV/"+method, &request, &response, grpc.ForceCodec(rawCodec{}))
	return response, err
}

func fail(format string, args ...interface{}) {
	fmt.Printf("FAILED: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 3 {
		fail("usage: go_client LEADER FOLLOWER")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	leader, err := grpc.DialContext(ctx, os.Args[1], grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		fail("dial %s: %v", os.Args[1], err)
	}
	follower, err := grpc.DialContext(ctx, os.Args[2], grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		fail("dial %s: %v", os.Args[2], err)
	}

	// Register opens a session; its id is the log index of the register entry.
	response, err := call(leader, "Register", nil)
	if err != nil {
		fail("Register: %v", err)
	}
	clientID, _, ok := field(response, 1)
	if !ok || clientID == 0 {
		fail("Register answered %x", response)
	}

	// 200 inserts from 50 goroutines over the one connection, then every value back.
	const writes = 200
	var wg sync.WaitGroup
	errs := make(chan error, writes)
	for g := 0; g < 50; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for seq := uint64(g + 1); seq <= writes; seq += 50 {
				request := uintField(nil, 1, clientID)
				request = uintField(request, 2, seq)
				request = stringField(request, 3, fmt.Sprintf("go-%d", seq))
				request = stringField(request, 4, fmt.Sprintf("value-%d", seq))
				response, err := call(leader, "Insert", request)
				if err != nil {
					errs <- fmt.Errorf("Insert %d: %v", seq, err)
					return
				}
				if ok, _, _ := field(response, 1); ok != 1 {
					errs <- fmt.Errorf("Insert %d answered %x", seq, response)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		fail("%v", err)
	}
	for seq := 1; seq <= writes; seq++ {
		response, err := call(leader, "Lookup", stringField(nil, 1, fmt.Sprintf("go-%d", seq)))
		if err != nil {
			fail("Lookup %d: %v", seq, err)
		}
		_, value, _ := field(response, 1)
		if string(value) != fmt.Sprintf("value-%d", seq) {
			fail("Lookup go-%d = %q", seq, value)
		}
	}
	response, err = call(leader, "Lookup", stringField(nil, 1, "go-missing"))
	if _, value, _ := field(response, 1); err != nil || string(value) != "(none)" {
		fail("Lookup of a missing key: %q, %v", value, err)
	}

	// A value far larger than grpc-go's initial windows (64 KiB), both ways.
	big := strings.Repeat("g", 1<<20)
	request := uintField(nil, 1, clientID)
	request = uintField(request, 2, writes+1)
	request = stringField(request, 3, "go-big")
	request = stringField(request, 4, big)
	if _, err := call(leader, "Insert", request); err != nil {
		fail("Insert of 1 MiB: %v", err)
	}
	response, err = call(leader, "Lookup", stringField(nil, 1, "go-big"))
	if _, value, _ := field(response, 1); err != nil || string(value) != big {
		fail("Lookup of 1 MiB: %d bytes, %v", len(value), err)
	}

	// A follower refuses a write with UNAVAILABLE (the original client then tries the
	// next server).
	request = uintField(nil, 1, clientID)
	request = uintField(request, 2, writes+2)
	request = stringField(request, 3, "go-follower")
	request = stringField(request, 4, "x")
	if _, err := call(follower, "Insert", request); status.Code(err) != codes.Unavailable {
		fail("Insert on a follower: %v (want Unavailable)", err)
	}
	// An unknown method is Unimplemented, not a broken connection.
	var nothing []byte
	err = leader.Invoke(ctx, "/rkvpb.RKV/Nope", &nothing, &nothing, grpc.ForceCodec(rawCodec{}))
	if status.Code(err) != codes.Unimplemented {
		fail("an unknown method: %v (want Unimplemented)", err)
	}
	fmt.Println("ok")
}
