// Command greeter is the child process of testproc's tests: it prints a
// greeting, then serves TCP on -listen until it is killed, or exits at once
// with -exit.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
)

func main() {
	listen := flag.String("listen", "", "host:port to accept connections on")
	exit := flag.Int("exit", -1, "exit with this status instead of listening")
	flag.Parse()
	fmt.Println("hello from greeter")
	if *exit >= 0 {
		os.Exit(*exit)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for {
		conn, err := ln.Accept()
		if err != nil {
			os.Exit(1)
		}
		conn.Close()
	}
}
