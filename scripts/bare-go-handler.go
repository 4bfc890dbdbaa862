// A bare Go net/http handler on a unix socket: every request gets the same VolumeDriver answer. It is the floor the
// Go volume plugins (docker/go-plugins-helpers serves its handlers with net/http) pay before any work of their own;
// scripts/bench measures do_storage next to it.
package main

import (
	"net"
	"net/http"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		os.Stderr.WriteString("usage: bare-go-handler SOCKET\n")
		os.Exit(64)
	}
	os.Remove(os.Args[1])
	listener, err := net.Listen("unix", os.Args[1])
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	body := []byte(`{"Err":""}`)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/vnd.docker.plugins.v1.2+json")
		w.Write(body)
	})
	if err := http.Serve(listener, handler); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
}
