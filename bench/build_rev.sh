# build_rev.sh REV DIR: a Release build of REV's package in DIR/pkg (import with PYTHONPATH=DIR/pkg)
set -e
rev=$1; dir=$(realpath -m "$2")
rm -rf $dir; mkdir -p $dir
git -C "$(dirname "$0")/.." archive $rev | tar -x -C $dir
cmake -S $dir -B $dir/build -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -Dpybind11_DIR="$(python -c 'import pybind11; print(pybind11.get_cmake_dir())')" > $dir/cmake.log
cmake --build $dir/build > $dir/build.log
src=$dir/src/pyconv; [ -d $src ] || src=$dir/pyconv  # the src/ layout, or the flat one before it
mkdir -p $dir/pkg && cp -r $src $dir/pkg/ && cp $dir/build/_core*.so $dir/pkg/pyconv/
echo built $rev
