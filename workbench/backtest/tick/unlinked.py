"""Call a compiled function by address, so the calling function does not link its code.

Numba links the code of every compiled function a compiled function calls into the caller and
optimizes and generates machine code for the whole again when the caller compiles: a small
uncacheable caller of the big cached tick kernel (`kernel.drive_jitclass`, compiled per
jitclass strategy in every process) would spend about a second re-generating the kernel each
time. `unlinked(f)` returns an intrinsic that calls `f`'s compiled overload for the argument
types through its machine-code address instead (numba's native calling convention: return
slot, exception slot, the flattened arguments; `numba.core.callconv.CPUCallConv.
call_function` builds the same call for a linked callee). The address is only valid in this
process, so a caller of it must not be cached (`drive_jitclass` is not: it takes jitclass
arguments).
"""

from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils
from numba.core.callconv import excinfo_t
from numba.core.typing import signature
from numba.extending import intrinsic


def unlinked(dispatcher):
    """An intrinsic `call(args)` calling `dispatcher` (an @njit function) by address with the
    tuple `args` as its arguments; returns its return value, and an exception it raises
    propagates to the caller."""

    @intrinsic
    def call(typingctx, args):
        argtys = tuple(args)
        cres = dispatcher.overloads.get(argtys)
        if cres is None:
            dispatcher.compile(argtys)
            cres = dispatcher.overloads[argtys]
        addr = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
        sig = signature(cres.signature.return_type, args)

        def codegen(context, builder, sig, llargs):
            conv = context.call_conv
            fnty = conv.get_function_type(sig.return_type, argtys)
            fn = builder.inttoptr(ir.Constant(ir.IntType(64), addr), fnty.as_pointer())
            retty = conv.get_return_type(sig.return_type).pointee
            ret = cgutils.alloca_once(builder, retty)
            builder.store(cgutils.get_null_value(retty), ret)
            exc = cgutils.alloca_once(builder, ir.PointerType(excinfo_t), name="excinfo")
            values = cgutils.unpack_tuple(builder, llargs[0], len(argtys))
            packed = list(conv._get_arg_packer(argtys).as_arguments(builder, values))
            code = builder.call(fn, [ret, exc, *packed])
            status = conv._get_return_status(builder, code, builder.load(exc))
            with cgutils.if_unlikely(builder, status.is_error):
                conv.return_status_propagate(builder, status)
            return context.get_returned_value(builder, sig.return_type, builder.load(ret))

        return sig, codegen

    return call
