/* `run_tool JOB.json --out DIR [...]`: gpp_run_main as its own program, so
 * the end-to-end tests drive the local runner exactly as `gpp-worker run`
 * does without depending on the worker binary's wiring. */
#include "gpp/stages.h"

int main(int argc, char **argv)
{
    argv[0] = "run";
    return gpp_run_main(argc, argv);
}
