// Command composecheck loads a Compose file the way Docker Compose v2 does (compose-go, its
// loader: YAML anchors and merges, variable interpolation with required variables, the
// Compose schema) and prints the resolved project as JSON. A file Compose would refuse, or
// a required variable left unset, exits 1 with Compose's own message. The tests use it to
// check deploy/docker/docker-compose.yml on machines where no container engine runs.
//
//	composecheck -f deploy/docker/docker-compose.yml   (variables from the environment)
package main

import (
	"context"
	"fmt"
	"os"

	"flag"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	file := flag.String("f", "docker-compose.yml", "the Compose file")
	flag.Parse()
	options, err := cli.NewProjectOptions([]string{*file}, cli.WithOsEnv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "composecheck:", err)
		os.Exit(1)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "composecheck:", err)
		os.Exit(1)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fmt.Fprintln(os.Stderr, "composecheck:", err)
		os.Exit(1)
	}
	os.Stdout.Write(out)
}
