import { add, multiply, subtract } from './math';

export function total(values: number[]): number {
  let sum = 0;
  for (const v of values) sum = add(sum, v);
  return sum;
}

export function area(width: number, height: number): number {
  return multiply(width, height);
}

console.log(total([1, 2, 3]), area(2, 3), subtract(5, 2));
