// A light load generator for the plugin's socket, as light as the Go plugins' own clients: keep-alive HTTP/1.1 over
// a unix socket, one goroutine per connection, the request serialised once and written as bytes, each answer read to
// the end of its Content-Length body. scripts/bench runs it against do_storage and the bare handlers alike.
//
// Usage: load-go-client SOCKET CONNECTIONS REQUESTS REQUEST
// Prints one line: requests per second, then p50 and p99 latency in milliseconds.
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

func connection(socket string, request []byte, count int) ([]time.Duration, error) {
	conn, err := net.Dial("unix", socket)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	reader := bufio.NewReaderSize(conn, 65536)
	latencies := make([]time.Duration, 0, count)
	for i := 0; i < count; i++ {
		started := time.Now()
		if _, err := conn.Write(request); err != nil {
			return nil, err
		}
		length := -1
		for {
			line, err := reader.ReadSlice('\n')
			if err != nil {
				return nil, err
			}
			if len(line) <= 2 {
				break
			}
			if len(line) > 15 && strings.EqualFold(string(line[:15]), "content-length:") {
				length, err = strconv.Atoi(strings.TrimSpace(string(line[15:])))
				if err != nil {
					return nil, err
				}
			}
		}
		if length < 0 {
			return nil, fmt.Errorf("an answer without Content-Length")
		}
		if _, err := reader.Discard(length); err != nil {
			return nil, err
		}
		latencies = append(latencies, time.Since(started))
	}
	return latencies, nil
}

func main() {
	if len(os.Args) != 5 {
		os.Stderr.WriteString("usage: load-go-client SOCKET CONNECTIONS REQUESTS REQUEST\n")
		os.Exit(64)
	}
	connections, err1 := strconv.Atoi(os.Args[2])
	requests, err2 := strconv.Atoi(os.Args[3])
	if err1 != nil || err2 != nil || connections < 1 || requests < connections {
		os.Stderr.WriteString("CONNECTIONS and REQUESTS are whole numbers, REQUESTS at least CONNECTIONS\n")
		os.Exit(64)
	}
	request := []byte(os.Args[4])
	perConnection := requests / connections
	results := make([][]time.Duration, connections)
	failures := make([]error, connections)
	var group sync.WaitGroup
	started := time.Now()
	for index := 0; index < connections; index++ {
		group.Add(1)
		go func(index int) {
			defer group.Done()
			results[index], failures[index] = connection(os.Args[1], request, perConnection)
		}(index)
	}
	group.Wait()
	elapsed := time.Since(started)
	var all []time.Duration
	for index, failure := range failures {
		if failure != nil && failure != io.EOF {
			fmt.Fprintf(os.Stderr, "connection %d: %v\n", index, failure)
			os.Exit(1)
		}
		all = append(all, results[index]...)
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	at := func(p float64) float64 {
		index := int(float64(len(all)) * p)
		if index >= len(all) {
			index = len(all) - 1
		}
		return float64(all[index].Microseconds()) / 1000
	}
	fmt.Printf("%.0f %.3f %.3f\n", float64(len(all))/elapsed.Seconds(), at(0.5), at(0.99))
}
