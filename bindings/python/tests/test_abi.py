"""The ctypes declarations of mgecl/__init__.py against include/mgecl.h.

ctypes trusts what it is told: a struct field declared in the wrong order or with the wrong
width, or a function given the wrong argument types, corrupts memory without an error. These
tests read the header itself: every struct's fields (names and types in order) and every
function's prototype are compared with the binding's declarations, and the struct layouts
(size, alignment and each field's offset) with what the C compiler makes of the header.
"""

import ctypes
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import mgecl

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
HEADER = os.path.join(ROOT, "include", "mgecl.h")

# Functions of the header that the binding does not call, and why.
NOT_BOUND = {
    "mgecl_test_panic": "exported only by the test-hooks build",
    "mgecl_image_file": "the binding fills mgecl_image itself",
    "mgecl_image_encoded": "the binding fills mgecl_image itself",
    "mgecl_image_pixels": "the binding fills mgecl_image itself",
}

# C scalar types and the ctypes type that has their size and meaning.
SCALARS = {
    "uint8_t": ctypes.c_uint8, "uint32_t": ctypes.c_uint32, "uint64_t": ctypes.c_uint64,
    "int32_t": ctypes.c_int32, "size_t": ctypes.c_size_t, "double": ctypes.c_double,
    "float": ctypes.c_float, "bool": ctypes.c_bool, "char": ctypes.c_char,
}


def _strip_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def header_structs(text):
    """{struct name: [(C type, field name), ...]} of the header's `typedef struct` bodies."""
    structs = {}
    for name, body in re.findall(r"typedef struct (\w+) \{(.*?)\} \1;", text, flags=re.S):
        fields = []
        for decl in body.split(";"):
            decl = " ".join(decl.split())
            if decl:
                m = re.fullmatch(r"(.+?)\s*(\**)\s*(\w+)", decl)
                fields.append(((m.group(1) + " " + m.group(2)).strip(), m.group(3)))
        structs[name] = fields
    return structs


def header_functions(text):
    """{function name: (return C type, [parameter C types])} of the header's prototypes."""
    functions = {}
    for ret, name, params in re.findall(
            r"^((?:const )?(?:struct |enum )?\w+ \**)(mgecl_\w+)\(([^)]*)\);", text, flags=re.M):
        params = " ".join(params.split())
        types = []
        if params != "void":
            for p in params.split(","):
                m = re.fullmatch(r"(.+?)\s*(\**)\s*(\w+)", p.strip())
                types.append((m.group(1) + " " + m.group(2)).strip())
        functions[name] = (ret.strip(), types)
    return functions


def _ctype_of(c_type, struct_classes):
    """The ctypes type for a C type of the header; None for `void`."""
    t = c_type.replace("const ", "").strip()
    stars = t.count("*")
    base = t.replace("*", "").strip()
    if base.startswith("struct "):
        base = base[len("struct "):]
    if base.startswith("enum "):
        # Enums are int-sized; the binding passes statuses as int32 and the other enums
        # (classifier, augmentation, kinds, formats) as uint32 fields.
        return "enum", stars
    if base in ("mgecl_model", "mgecl_task"):  # opaque handles
        assert stars >= 1, c_type
        return (ctypes.c_void_p if stars == 1 else ctypes.POINTER(ctypes.c_void_p)), 0
    if base == "void":
        return None, stars
    if base in struct_classes:
        result = struct_classes[base]
    else:
        result = SCALARS[base]
    if base == "char" and stars >= 1:
        result, stars = ctypes.c_char_p, stars - 1
    for _ in range(stars):
        result = ctypes.POINTER(result)
    return result, 0


def _same(wanted, declared):
    # ctypes makes POINTER(X) once per X, so identity compares pointer types too. A `char *`
    # is a text (c_char_p) or a buffer the library writes into (POINTER(c_char)).
    if wanted is ctypes.c_char_p and declared is ctypes.POINTER(ctypes.c_char):
        return True
    return wanted is declared


def binding_structs():
    """{C struct name: ctypes class} of the binding (each class names its C struct)."""
    out = {}
    for value in vars(mgecl).values():
        if isinstance(value, type) and issubclass(value, ctypes.Structure) \
                and hasattr(value, "c_name"):
            out[value.c_name] = value
    return out


class HeaderTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(HEADER) as f:
            cls.text = _strip_comments(f.read())
        cls.structs = header_structs(cls.text)
        cls.functions = header_functions(cls.text)
        cls.classes = binding_structs()

    def test_the_header_parses(self):
        # A parser that found nothing would let every test below pass.
        self.assertGreaterEqual(len(self.structs), 7, sorted(self.structs))
        self.assertGreaterEqual(len(self.functions), 35, sorted(self.functions))
        self.assertIn("mgecl_task_options", self.structs)

    def test_every_struct_is_declared_with_the_headers_fields_in_order(self):
        self.assertEqual(sorted(self.classes), sorted(self.structs))
        for name, fields in self.structs.items():
            declared = self.classes[name]._fields_
            self.assertEqual([f for _, f in fields], [f for f, _ in declared], name)
            for (c_type, field), (_, py_type) in zip(fields, declared):
                wanted, _ = _ctype_of(c_type, self.classes)
                if wanted == "enum":
                    wanted = ctypes.c_uint32
                self.assertTrue(_same(wanted, py_type),
                                f"{name}.{field}: header {c_type}, binding {py_type.__name__}")

    def test_every_function_is_declared_with_the_headers_prototype(self):
        for name, (ret, params) in sorted(self.functions.items()):
            if name in NOT_BOUND:
                continue
            function = getattr(mgecl._lib, name)
            self.assertIsNotNone(function.argtypes, f"{name} is not declared in the binding")
            self.assertEqual(len(function.argtypes), len(params), name)
            for i, (c_type, declared) in enumerate(zip(params, function.argtypes)):
                wanted, _ = _ctype_of(c_type, self.classes)
                if wanted == "enum":
                    wanted = ctypes.c_int32 if "mgecl_status" in c_type else ctypes.c_uint32
                self.assertTrue(_same(wanted, declared),
                                f"{name} argument {i}: header {c_type}, binding {declared}")
            wanted, _ = _ctype_of(ret, self.classes)
            if wanted == "enum":
                wanted = ctypes.c_int32
            restype = function.restype
            if wanted is None:
                self.assertIsNone(restype, name)
            else:
                self.assertTrue(_same(wanted, restype),
                                f"{name} returns: header {ret}, binding {restype}")

    @unittest.skipIf(shutil.which("cc") is None, "needs a C compiler (cc)")
    def test_struct_layouts_match_the_c_compilers(self):
        lines = ["#include <stdio.h>", "#include <stddef.h>", '#include "mgecl.h"',
                 "int main(void) {"]
        for name, fields in self.structs.items():
            lines.append(f'printf("{name} size %zu align %zu\\n", sizeof(struct {name}), '
                         f"_Alignof(struct {name}));")
            for _, field in fields:
                lines.append(f'printf("{name}.{field} %zu\\n", offsetof(struct {name}, {field}));')
        lines += ["return 0;", "}"]
        with tempfile.TemporaryDirectory() as tmp:
            source, program = os.path.join(tmp, "layout.c"), os.path.join(tmp, "layout")
            with open(source, "w") as f:
                f.write("\n".join(lines))
            subprocess.run(["cc", "-std=c11", "-I", os.path.dirname(HEADER), source, "-o",
                            program], check=True)
            out = subprocess.run([program], check=True, capture_output=True, text=True).stdout
        c_layout = dict(line.rsplit(" ", 1) for line in out.splitlines() if " size " not in line)
        for line in out.splitlines():
            if " size " in line:
                name, _, size, _, align = line.split()
                cls = self.classes[name]
                self.assertEqual(ctypes.sizeof(cls), int(size), f"sizeof {name}")
                self.assertEqual(ctypes.alignment(cls), int(align), f"alignment of {name}")
        for key, offset in c_layout.items():
            name, field = key.split(".")
            self.assertEqual(getattr(self.classes[name], field).offset, int(offset), key)


if __name__ == "__main__":
    unittest.main()
