// argo-check puts a compiled pipeline spec through the code by which a Kubeflow Pipelines 2.x
// API server turns an upload into an Argo Workflow: the server's own functions, called in the
// server's order, not a copy of them. A spec refused here is one the cluster would refuse, at
// upload or when a run is created. Neither kfp's Python types nor TFX's compiler see these
// refusals (a TFX Resolver, for one: "non-container and non-importer executor not implemented").
//
//	argo-check SPEC.yaml [--out WORKFLOW.yaml]
//
// Exit status: 0 compiled (the Workflow on stdout or in --out), 1 refused (the reason on
// stderr), 2 usage or I/O error.
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/kubeflow/pipelines/backend/src/apiserver/common"
	"github.com/kubeflow/pipelines/backend/src/apiserver/model"
	"github.com/kubeflow/pipelines/backend/src/apiserver/template"
	"github.com/kubeflow/pipelines/backend/src/common/util"
	"sigs.k8s.io/yaml"
)

// A fixed run id, so the same spec always gives the same Workflow (the server uses a new UUID).
const runID = "00000000-0000-0000-0000-000000000000"

func main() {
	specPath, outPath, err := parseArgs(os.Args[1:])
	if err != nil {
		fail(2, "%v\nusage: argo-check SPEC.yaml [--out WORKFLOW.yaml]", err)
	}
	data, err := os.ReadFile(specPath)
	if err != nil {
		fail(2, "%v", err)
	}

	// Upload (ResourceManager.CreatePipelineAndPipelineVersion): template.New splits the YAML
	// into the PipelineSpec (first document) and an optional PlatformSpec (a document with
	// `platforms: kubernetes:`), and refuses what the server refuses, e.g. a schemaVersion
	// other than 2.1.0. A v1 (Argo) YAML would be accepted as v1, so insist on v2.
	tmpl, err := template.New(data)
	if err == nil && !tmpl.IsV2() {
		err = fmt.Errorf("not a KFP v2 PipelineSpec (an Argo Workflow?)")
	}
	if err == nil {
		err = common.ValidatePipelineName(tmpl.V2PipelineName())
	}
	if err != nil {
		fail(1, "the KFP API server refuses this upload: %v", err)
	}

	// Run creation (ResourceManager.CreateRun): RunWorkflow builds the PipelineJob (the spec as
	// a Struct, the run's empty runtime config) and calls argocompiler.Compile with the
	// "kubernetes" platform spec, or nil; the server then has Argo validate the Workflow.
	run := &model.Run{DisplayName: tmpl.V2PipelineName()}
	spec, err := tmpl.RunWorkflow(run, template.RunWorkflowOptions{RunId: runID})
	if err == nil {
		err = spec.Validate(false, false)
	}
	if err != nil {
		fail(1, "the KFP backend cannot run this spec: %v", err)
	}

	out, err := yaml.Marshal(spec.(*util.Workflow).Get())
	if err == nil && outPath != "" {
		err = os.WriteFile(outPath, out, 0o644)
	} else if err == nil {
		_, err = os.Stdout.Write(out)
	}
	if err != nil {
		fail(2, "%v", err)
	}
}

// parseArgs takes --out before or after the spec: the flag package stops at the first
// positional argument, so it would silently ignore `argo-check SPEC.yaml --out W.yaml`.
func parseArgs(args []string) (spec, out string, err error) {
	for i := 0; i < len(args); i++ {
		if value, ok := strings.CutPrefix(args[i], "--out="); ok {
			out = value
		} else if args[i] == "--out" && i+1 < len(args) {
			i++
			out = args[i]
		} else if spec == "" && !strings.HasPrefix(args[i], "-") {
			spec = args[i]
		} else {
			return "", "", fmt.Errorf("unexpected argument %q", args[i])
		}
	}
	if spec == "" {
		return "", "", fmt.Errorf("no SPEC.yaml given")
	}
	return spec, out, nil
}

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "argo-check: "+format+"\n", args...)
	os.Exit(code)
}
