/* The `gpp-worker export` subcommand as a stand-alone program, for the
 * ONNX Runtime test (check_onnx.py): export_tool MODEL.gppm --onnx OUT.onnx */
#include "gpp/export.h"

int main(int argc, char **argv)
{
    return gpp_export_main(argc, argv);
}
