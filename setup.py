from setuptools import setup

setup(cffi_modules=["workbench/feed/_feed_build.py:ffibuilder",
                    "workbench/feed/_native_build.py:ffibuilder"])
