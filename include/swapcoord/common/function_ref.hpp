#pragma once
// A non-owning reference to a callable (like C++26 std::function_ref): no allocation,
// for callbacks on hot paths. The callable must outlive the call it is passed to.
#include <type_traits>
#include <utility>

namespace swapcoord {

template <class Signature>
class FunctionRef;

template <class R, class... Args>
class FunctionRef<R(Args...)> {
 public:
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, FunctionRef> &&
                                              std::is_invocable_r_v<R, F&, Args...>>>
  FunctionRef(F&& f) noexcept  // NOLINT(google-explicit-constructor): meant to convert
      : _object(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        _call([](void* object, Args... args) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(object))(std::forward<Args>(args)...);
        }) {}

  R operator()(Args... args) const { return _call(_object, std::forward<Args>(args)...); }

 private:
  void* _object;
  R (*_call)(void*, Args...);
};

}  // namespace swapcoord
