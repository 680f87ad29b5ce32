# -*- Python -*-
# lit configuration for qcc: .mlir tests run through qcc-opt and FileCheck.

import os
import shutil

import lit.formats
from lit.llvm import llvm_config
from lit.llvm.subst import ToolSubst

config.name = "QCC"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
config.excludes = ["CMakeLists.txt", "README.md", "lit.cfg.py", "runtime",
                   "python", "malformed", "fuzz", "Inputs"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.qcc_obj_root, "test")

config.substitutions.append(("%PATH%", config.environment["PATH"]))
config.substitutions.append(("%qcc_src_root", config.qcc_src_root))
config.substitutions.append(("%qcc_obj_root", config.qcc_obj_root))
config.substitutions.append(
    ("%golden", os.path.join(config.qcc_src_root, "test", "data", "golden",
                             "ggml-golden.gguf")))

llvm_config.with_system_environment(["HOME", "TMPDIR"])
llvm_config.use_default_substitutions()
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)

tool_dirs = [config.qcc_tools_dir, config.llvm_tools_dir]
tools = [ToolSubst("qcc-opt", unresolved="fatal")]
for optional in ["qcc-gguf", "qcc", "qcc-run"]:
    tools.append(ToolSubst(optional, unresolved="ignore"))
llvm_config.add_tool_substitutions(tools, tool_dirs)

# GPU execution tests need a CUDA driver; elsewhere they are unsupported.
if os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi"):
    config.available_features.add("cuda")
if shutil.which("ptxas"):
    config.available_features.add("ptxas")
